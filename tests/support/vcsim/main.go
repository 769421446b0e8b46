// Command vcsim starts govmomi's vCenter simulator (the default VPX inventory:
// DC0, cluster DC0_C0, datastore LocalDS_0, network "VM Network") on one
// address with TLS and one user, prints its URL and serves until SIGTERM.
// The tests' vSphere peer (tests/support/vcsim_peer.py) builds it from
// Debian's golang-github-vmware-govmomi-dev in GOPATH mode.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	user := flag.String("username", "user", "the one user name")
	password := flag.String("password", "pass", "its password")
	cert := flag.String("cert", "", "PEM certificate (default: a built-in localhost one)")
	key := flag.String("key", "", "PEM key of -cert")
	flag.Parse()

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("cannot create the inventory: %s", err)
	}
	defer model.Remove()
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *password)}
	model.Service.TLS = new(tls.Config)
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatalf("cannot load -cert/-key: %s", err)
		}
		model.Service.TLS.Certificates = []tls.Certificate{pair}
	}
	model.Service.RegisterEndpoints = true
	server := model.Service.NewServer()
	defer server.Close()
	shown := *server.URL
	shown.User = nil
	fmt.Printf("VCSIM_URL=%s\n", shown.String())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
