// The command-centre screen: keeps the clock running, refreshes the panels from
// /screen/data without reloading the page, retries with a growing pause while the server is
// away, and rotates the map through its layers (the next frame loads hidden, then fades in).
"use strict";
(function () {
  const body = document.body;
  const dataUrl = body.dataset.url;
  const pollMs = Number(body.dataset.poll || 60) * 1000;
  const rotateMs = Number(body.dataset.rotate || 30) * 1000;
  const frames = JSON.parse(body.dataset.frames || "[]");
  const connection = document.getElementById("connection");
  const clock = document.getElementById("clock");
  const clockFormat = new Intl.DateTimeFormat(body.dataset.locale || "zh-CN", {
    timeZone: body.dataset.timezone || undefined,
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  let failures = 0;

  function tick() {
    clock.textContent = clockFormat.format(new Date());
  }

  function showConnection(text) {
    connection.textContent = text || "";
    connection.hidden = !text;
  }

  function apply(data) {
    const panels = data.panels || {};
    for (const name of Object.keys(panels)) {
      const element = document.querySelector('[data-panel="' + name + '"]');
      // The server rendered and escaped each panel; replace only what changed.
      if (element && element.innerHTML !== panels[name]) element.innerHTML = panels[name];
    }
  }

  async function refresh() {
    let wait = pollMs;
    try {
      const response = await fetch(dataUrl, {
        cache: "no-store", credentials: "same-origin", headers: { Accept: "application/json" },
      });
      if (response.status === 401) {
        showConnection(body.dataset.textSignedOut);
        failures += 1;
        wait = Math.min(pollMs, 5000 * failures);
      } else if (!response.ok) {
        throw new Error("HTTP " + response.status);
      } else {
        apply(await response.json());
        failures = 0;
        showConnection("");
      }
    } catch (error) {
      // The server is restarting or the network is down: keep the last figures on the wall.
      failures += 1;
      showConnection(body.dataset.textOffline);
      wait = Math.min(pollMs, 2000 * 2 ** Math.min(failures, 5));
    }
    window.setTimeout(refresh, wait);
  }

  function rotate() {
    if (frames.length < 2) return;
    const stack = document.querySelectorAll(".map-stack .map-frame");
    const label = document.getElementById("map-layer");
    let index = 0;
    window.setInterval(function () {
      if (failures) return; // do not swap in an error page while the server is away
      index = (index + 1) % frames.length;
      const shown = document.querySelector(".map-stack .map-frame.active");
      const next = shown === stack[0] ? stack[1] : stack[0];
      next.onload = function () {
        next.onload = null;
        next.classList.add("active");
        shown.classList.remove("active");
        label.textContent = frames[index].label;
      };
      next.src = frames[index].url;
    }, rotateMs);
  }

  tick();
  window.setInterval(tick, 1000);
  window.setTimeout(refresh, pollMs);
  rotate();
})();
