// Used by the browser test only: opened with "?measure-overflow", a page appends a JSON report of the
// formulas that do not fit their text column once MathJax has typeset them (#overflow-report).
(function () {
  if (!window.location.search.includes("measure-overflow")) return;
  function source(element) {
    try {
      return window.MathJax.startup.document.getMathItemsWithin(element)[0].math;
    } catch (error) {
      return element.textContent.slice(0, 80);
    }
  }
  function measure() {
    const report = { width: window.innerWidth, page: 0, displays: [], inline: [], lost: [] };
    report.page = Math.max(0, document.documentElement.scrollWidth - window.innerWidth);
    document.querySelectorAll("mjx-container").forEach(function (element) {
      const display = element.getAttribute("display") === "true";
      const box = display ? element.parentElement : element;
      const math = element.querySelector("mjx-math");
      const wide = math ? math.getBoundingClientRect().width : 0;
      if (wide > box.clientWidth + 1) {
        (display ? report.displays : report.inline).push(source(element));
      }
      // lost: content beyond the first box (itself or an ancestor) that clips it without a scroll bar
      const right = math ? math.getBoundingClientRect().right : 0;
      for (let node = element; node && node !== document.body; node = node.parentElement) {
        const style = window.getComputedStyle(node);
        if (style.overflowX === "auto" || style.overflowX === "scroll") break;
        if (style.overflowX === "hidden" || style.overflowX === "clip") {
          if (right > node.getBoundingClientRect().right + 1) {
            report.lost.push(source(element) + " [clipped by " + node.tagName.toLowerCase() + "." + node.className + "]");
          }
          break;
        }
      }
    });
    const out = document.createElement("pre");
    out.id = "overflow-report";
    out.textContent = JSON.stringify(report);
    document.body.appendChild(out);
  }
  window.addEventListener("load", function () {
    const ready = window.MathJax && window.MathJax.startup ? window.MathJax.startup.promise : Promise.resolve();
    ready.then(function () { window.setTimeout(measure, 200); });
  });
})();
