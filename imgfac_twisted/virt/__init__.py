"""libvirt: one dedicated thread per connection URI, domain XML, and the install watcher.

``connection.LibvirtConnection`` runs every libvirt call on its own thread;
``domain.domain_xml`` describes an installer's virtual machine;
``install.run_install`` boots it and watches it until the guest powers off.
``import libvirt`` happens only on the connection's thread, so a daemon that
never installs a real OS needs no libvirtd.
"""
