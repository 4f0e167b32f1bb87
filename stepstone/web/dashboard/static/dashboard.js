// Stepstone dashboard: confirmations, select-all, and live instance updates from the event
// stream. No framework, no build step; the pages work without it (minus live updates).
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="ids"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }

  var live = document.getElementById("live");
  var note = document.getElementById("live-note");
  if (!live || !live.dataset.events || !window.EventSource) {
    return;
  }
  var TERMINAL = ["workflow_completed", "workflow_errored", "workflow_terminated"];
  var pending = null;
  var inflight = false;
  var again = false;

  function refresh() {
    if (inflight) {
      again = true;
      return;
    }
    inflight = true;
    fetch(live.dataset.fragment, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (answer) {
        if (answer.redirected || !answer.ok) {
          throw new Error("HTTP " + answer.status);
        }
        return answer.text();
      })
      .then(function (html) {
        live.innerHTML = html;
      })
      .catch(function (error) {
        if (note) note.textContent = "Could not refresh (" + error.message + "); reload the page.";
      })
      .finally(function () {
        inflight = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  function schedule() {
    // Events come in bursts (a step's start, attempt and completion); one refresh per burst.
    if (pending) clearTimeout(pending);
    pending = setTimeout(function () {
      pending = null;
      refresh();
    }, 120);
  }

  var source = new EventSource(live.dataset.events);
  source.onmessage = function (message) {
    var event;
    try {
      event = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    if (note) {
      note.textContent =
        "Live · last event " + event.type + (event.stepName ? " (" + event.stepName + ")" : "");
    }
    live.dataset.lastEvent = String(event.eventId);
    var eventType = document.getElementById("ev-type");
    if (event.type === "wait_started" && eventType && !eventType.value) {
      eventType.value = event.eventType;
    }
    schedule();
    if (TERMINAL.indexOf(event.type) >= 0) {
      source.close();
      if (note) note.textContent = "This instance has ended (" + event.type + ").";
    }
  };
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED && note) {
      note.textContent = "Live updates stopped; reload the page to resume.";
    }
  };
})();
