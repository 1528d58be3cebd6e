// Ferry console: the only script. Every element with data-live="URL" follows that URL's
// server-sent events: event `job` carries the element's new content, already rendered (and
// escaped) by the server; event `end` says the job is final; event `failure` says why the
// stream stopped. The page is never reloaded.
"use strict";
(function () {
  function follow(el) {
    var url = el.getAttribute("data-live");
    if (!url || !window.EventSource) {
      return;
    }
    var events = new EventSource(url);
    el.setAttribute("data-following", "true");
    events.addEventListener("job", function (e) {
      el.innerHTML = e.data;
    });
    events.addEventListener("end", function () {
      events.close();
      el.setAttribute("data-ended", "true");
      // Nothing is left to cancel.
      document.querySelectorAll("[data-hide-when-done]").forEach(function (x) {
        x.hidden = true;
      });
    });
    events.addEventListener("failure", function (e) {
      events.close();
      var p = document.createElement("p");
      p.className = "error";
      p.setAttribute("role", "alert");
      p.textContent = e.data;
      el.appendChild(p);
    });
    // On a dropped connection EventSource reconnects by itself and gets the current state.
  }
  function start() {
    document.querySelectorAll("[data-live]").forEach(follow);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
