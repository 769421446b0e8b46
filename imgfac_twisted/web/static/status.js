/* The Image Factory status page.
 *
 * Reads every builder once, a page at a time (GET /imagefactory/builders
 * ?limit=...), then once a second only what may have changed: the builders
 * made since (the pages after the last one read, ?marker=), the unfinished
 * builders (?unfinished=1), and one by one those that were unfinished and are
 * not any more (they ended, or were deleted).  Finished builders are not read
 * again; every minute the whole list is read again (deletions of finished
 * builders show then).  One table row per builder, newest first, updated in
 * place (keyed by builder id) so nothing flickers.  Data reaches the page
 * only through textContent, element properties and attributes: never as markup.
 */
(function () {
  "use strict";

  var API = "/imagefactory/builders";
  var PAGE_LIMIT = 500;
  var FULL_EVERY = 60;  // polls between two reads of the whole list
  var INTERVAL_MS = 1000;
  var TIMEOUT_MS = 5000;
  var WHOLE_TIMEOUT_MS = 120000;  // reading every builder of a large installation takes a while
  var STATUSES = ["NEW", "PENDING", "BUILDING", "PUSHING", "COMPLETED", "FAILED"];
  var RUNNING = { BUILDING: true, PUSHING: true };
  var COLUMNS = ["Builder", "Image / build", "Target", "Operation", "Status", "Progress",
                 "Failure reason", "Links"];

  var $ = function (id) { return document.getElementById(id); };
  var tbody = $("rows");
  var rows = new Map();  // builder id -> {tr, cells, status}
  var counts = { ALL: 0 };
  STATUSES.forEach(function (status) { counts[status] = 0; });
  var lastMarker = null;  // the id of the newest builder read by paging (null: read the whole list)
  var polls = 0;
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

  /* Show ``builder`` (its row made, at the top, when it is new: builders come oldest first). */
  function apply(builder) {
    var id = String(builder.id);
    var row = rows.get(id);
    if (!row) {
      row = makeRow(id);
      rows.set(id, row);
      tbody.insertBefore(row.tr, tbody.firstChild);
      counts.ALL += 1;
    } else if (row.status in counts) {
      counts[row.status] -= 1;
    }
    row.status = String(builder.status || "");
    if (row.status in counts) counts[row.status] += 1;
    updateRow(row, builder);
  }

  function forget(id) {
    var row = rows.get(id);
    if (!row) return;
    row.tr.remove();
    rows.delete(id);
    counts.ALL -= 1;
    if (row.status in counts) counts[row.status] -= 1;
  }

  function showCounts() {
    document.querySelectorAll("#summary li").forEach(function (item) {
      var count = counts[item.dataset.status] || 0;
      setText(item.querySelector("strong"), count);
      item.classList.toggle("zero", count === 0);
    });
    $("empty").hidden = rows.size > 0;
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

  /* GET ``url`` as JSON; rejects with the HTTP status in ``status`` when it is not 2xx. */
  function getJson(url, signal) {
    return fetch(url, {
      headers: { Accept: "application/json" },
      cache: "no-store",
      credentials: "same-origin",
      signal: signal
    }).then(function (answer) {
      if (!answer.ok) {
        var error = new Error("HTTP " + answer.status);
        error.status = answer.status;
        throw error;
      }
      return answer.json();
    });
  }

  function listOf(body) {
    if (!body || !Array.isArray(body.builders)) throw new Error("unexpected answer");
    return body.builders;
  }

  /* Every builder after ``marker`` (from the first with null), following ``next``; oldest first. */
  function pagesAfter(marker, signal) {
    var found = [];
    function read(url) {
      return getJson(url, signal).then(function (body) {
        found = found.concat(listOf(body));
        return body.next ? read(body.next) : found;
      });
    }
    return read(API + "?limit=" + PAGE_LIMIT + (marker ? "&marker=" + encodeURIComponent(marker) : ""));
  }

  /* Read the whole list again: rows of builders gone are removed. */
  function readAll(signal) {
    return pagesAfter(null, signal).then(function (builders) {
      var seen = new Set();
      builders.forEach(function (builder) { seen.add(String(builder.id)); apply(builder); });
      Array.from(rows.keys()).forEach(function (id) { if (!seen.has(id)) forget(id); });
      lastMarker = builders.length ? String(builders[builders.length - 1].id) : null;
    });
  }

  /* Read what may have changed: new builders, the unfinished ones, and those no longer unfinished. */
  function readChanges(signal) {
    var wasUnfinished = [];
    rows.forEach(function (row, id) {
      if (row.status !== "COMPLETED" && row.status !== "FAILED") wasUnfinished.push(id);
    });
    return pagesAfter(lastMarker, signal).then(function (builders) {
      builders.forEach(apply);
      if (builders.length) lastMarker = String(builders[builders.length - 1].id);
      return getJson(API + "?unfinished=1", signal);
    }).then(function (body) {
      var unfinished = new Set();
      listOf(body).forEach(function (builder) { unfinished.add(String(builder.id)); apply(builder); });
      var ended = wasUnfinished.filter(function (id) { return !unfinished.has(id) && rows.has(id); });
      return Promise.all(ended.map(function (id) {
        return getJson(builderPath(id), signal).then(apply, function (error) {
          if (error.status === 404) forget(id); else throw error;
        });
      }));
    });
  }

  function poll() {
    var controller = new AbortController();
    var whole = lastMarker === null || polls % FULL_EVERY === 0;
    var waitMs = whole ? WHOLE_TIMEOUT_MS : TIMEOUT_MS;
    var timer = setTimeout(function () { controller.abort(); }, waitMs);
    polls += 1;
    (whole ? readAll(controller.signal) : readChanges(controller.signal).catch(function (error) {
      // The marker was deleted (or never existed here): read the whole list again.
      if (error && error.status === 400) return readAll(controller.signal);
      throw error;
    })).then(function () {
      showCounts();
      online();
    }).catch(function (error) {
      showCounts();
      offline(error && error.name === "AbortError" ? "no answer within " + waitMs / 1000 + " s"
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
