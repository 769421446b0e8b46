/* The Image Factory status page.
 *
 * Polls GET /imagefactory/builders (JSON) once a second and keeps one table
 * row per builder, newest first, updating rows in place (keyed by builder id)
 * so nothing flickers.  Data reaches the page only through textContent,
 * element properties and attributes: never as markup.
 */
(function () {
  "use strict";

  var API = "/imagefactory/builders";
  var INTERVAL_MS = 1000;
  var TIMEOUT_MS = 5000;
  var STATUSES = ["NEW", "PENDING", "BUILDING", "PUSHING", "COMPLETED", "FAILED"];
  var RUNNING = { BUILDING: true, PUSHING: true };
  var COLUMNS = ["Builder", "Image / build", "Target", "Operation", "Status", "Progress",
                 "Failure reason", "Links"];

  var $ = function (id) { return document.getElementById(id); };
  var tbody = $("rows");
  var rows = new Map();  // builder id -> {tr, cells}
  var lastSuccess = null;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setText(node, text) {
    text = text === null || text === undefined ? "" : String(text);
    if (node.textContent !== text) node.textContent = text;
  }

  function setAttr(node, name, value) {
    value = String(value);
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }

  function short(id) {
    return id ? String(id).slice(0, 8) : "";
  }

  /* An id shown short, with the whole id as its tooltip. */
  function setId(node, id) {
    setText(node, short(id));
    setAttr(node, "title", id || "");
  }

  function builderPath(id) {
    return API + "/" + encodeURIComponent(id);
  }

  /* "<key> <code>" in its own span; returns the code element. */
  function labelled(parent, key) {
    var pair = parent.appendChild(el("span", "pair"));
    pair.appendChild(el("span", "key", key + " "));
    return pair.appendChild(el("code", "id"));
  }

  function makeRow(id) {
    var tr = el("tr");
    tr.dataset.id = id;
    var cells = COLUMNS.map(function (label, index) {
      var cell = el(index === 0 ? "th" : "td");
      if (index === 0) cell.scope = "row";
      cell.dataset.label = label;
      tr.appendChild(cell);
      return cell;
    });
    var row = { tr: tr };

    row.id = cells[0].appendChild(el("code", "id"));

    cells[1].className = "ids";
    var ids = cells[1].appendChild(el("span", "stack"));
    row.image = labelled(ids, "image");
    row.build = labelled(ids, "build");

    var place = cells[2].appendChild(el("span", "stack"));
    row.target = place.appendChild(el("span", "target"));
    row.where = place.appendChild(el("span", "where"));
    row.operation = cells[3];
    row.badge = cells[4].appendChild(el("span", "badge"));

    var meter = cells[5].appendChild(el("span", "meter"));
    row.progress = meter.appendChild(el("progress"));
    row.progress.max = 100;
    row.progress.setAttribute("aria-label", "Progress of builder " + short(id));
    row.percent = meter.appendChild(el("span", "percent"));
    row.stage = meter.appendChild(el("span", "stage"));

    row.reason = cells[6];
    row.reason.className = "reason";

    cells[7].className = "links";
    var details = cells[7].appendChild(el("a", "details", "Details"));
    details.href = builderPath(id);
    details.setAttribute("aria-label", "Details of builder " + id);
    var log = cells[7].appendChild(el("a", "log", "Log"));
    log.href = builderPath(id) + "/log";
    log.setAttribute("aria-label", "Log of builder " + id);

    return row;
  }

  function targetText(builder) {
    var text = builder.target || "";
    if (builder.provider) text += (text ? " → " : "") + builder.provider;
    return text;
  }

  /* Where a push went: the provider account and the image's id there. */
  function whereText(builder) {
    var parts = [];
    if (builder.provider_account_identifier) parts.push("account " + builder.provider_account_identifier);
    if (builder.identifier_on_provider) parts.push("id " + builder.identifier_on_provider);
    return parts.join(" · ");
  }

  function updateRow(row, builder) {
    var status = String(builder.status || "");
    var completed = Math.max(0, Math.min(100, Number(builder.completed) || 0));
    if (row.tr.dataset.status !== status) row.tr.dataset.status = status;
    setId(row.id, builder.id);
    setId(row.image, builder.image_id);
    setId(row.build, builder.build_id);
    setText(row.target, targetText(builder));
    setText(row.where, whereText(builder));
    setText(row.operation, builder.operation);
    setText(row.badge, status);
    if (row.progress.value !== completed) row.progress.value = completed;
    setAttr(row.progress, "aria-valuetext", completed + "% " + status.toLowerCase());
    setText(row.percent, completed + "%");
    /* The stage running now (installing, boot test, converting...): where the time goes. */
    setText(row.stage, builder.stage ? String(builder.stage).replace("_", " ") : "");
    setText(row.reason, status === "FAILED" ? builder.status_detail || "(no reason given)" : "");
  }

  function render(builders) {
    var newestFirst = builders.slice().reverse();
    var seen = new Set();
    var counts = { ALL: 0 };
    STATUSES.forEach(function (status) { counts[status] = 0; });

    newestFirst.forEach(function (builder, index) {
      var id = String(builder.id);
      seen.add(id);
      var row = rows.get(id);
      if (!row) {
        row = makeRow(id);
        rows.set(id, row);
      }
      updateRow(row, builder);
      var there = tbody.children[index];
      if (there !== row.tr) tbody.insertBefore(row.tr, there || null);
      counts.ALL += 1;
      if (builder.status in counts) counts[builder.status] += 1;
    });
    rows.forEach(function (row, id) {  // builders deleted since the last poll
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    });

    document.querySelectorAll("#summary li").forEach(function (item) {
      var count = counts[item.dataset.status] || 0;
      setText(item.querySelector("strong"), count);
      item.classList.toggle("zero", count === 0);
    });
    $("empty").hidden = newestFirst.length > 0;
    var running = (counts.BUILDING || 0) + (counts.PUSHING || 0);
    var title = (running ? "(" + running + " running) " : "") + "Image Factory builders";
    if (document.title !== title) document.title = title;
  }

  function setState(state, text) {
    $("live").dataset.state = state;
    setText($("state"), text);
  }

  function online() {
    lastSuccess = new Date();
    var updated = $("updated");
    updated.dateTime = lastSuccess.toISOString();
    setText(updated, lastSuccess.toLocaleTimeString());
    setState("live", "Live");
    $("banner").hidden = true;
  }

  function offline(reason) {
    var banner = $("banner");
    setText(banner, "Cannot reach the Image Factory daemon (" + reason + "). Retrying every second" +
      (lastSuccess ? "; the rows below are as of " + lastSuccess.toLocaleTimeString() + "." : "."));
    banner.hidden = false;
    setState("offline", "Offline");
  }

  function poll() {
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, TIMEOUT_MS);
    fetch(API, {
      headers: { Accept: "application/json" },
      cache: "no-store",
      credentials: "same-origin",
      signal: controller.signal
    }).then(function (answer) {
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      return answer.json();
    }).then(function (body) {
      if (!body || !Array.isArray(body.builders)) throw new Error("unexpected answer");
      render(body.builders);
      online();
    }).catch(function (error) {
      offline(error && error.name === "AbortError" ? "no answer within " + TIMEOUT_MS / 1000 + " s"
        : (error && error.message) || "unknown error");
    }).then(function () {
      clearTimeout(timer);
      setTimeout(schedule, INTERVAL_MS);
    });
  }

  /* Poll now, or once the tab is visible again (background tabs do not poll). */
  function schedule() {
    if (!document.hidden) {
      poll();
      return;
    }
    document.addEventListener("visibilitychange", function resume() {
      if (document.hidden) return;
      document.removeEventListener("visibilitychange", resume);
      poll();
    });
  }

  schedule();
})();
