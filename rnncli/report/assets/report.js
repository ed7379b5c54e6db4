"use strict";
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const history = JSON.parse(document.getElementById("history").textContent);
  const spans = Array.from(document.querySelectorAll("#excerpt [data-char-index]"));
  const blockSelect = document.getElementById("block");
  const unitSelect = document.getElementById("unit");
  const legend = document.getElementById("legend");
  const excerpt = document.getElementById("excerpt");
  const decoded = {};
  let values = null, current = "";

  function unpack(key) {
    if (!(key in decoded)) {
      const bytes = atob(data.units[key]), n = spans.length, out = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const b = bytes.charCodeAt(i >> 1);
        out[i] = i % 2 ? b & 15 : b >> 4;
      }
      decoded[key] = out;
    }
    return decoded[key];
  }
  // Diverging: red for the low end of a range, white in the middle, blue for the high end.
  function diverging(t) {
    const lo = [202, 64, 48], mid = [247, 247, 245], hi = [38, 104, 175];
    const a = t < 0.5 ? lo : hi, s = Math.abs(t - 0.5) * 2;
    const c = mid.map((m, k) => Math.round(m + (a[k] - m) * s));
    return "rgb(" + c.join(",") + ")";
  }
  function heat(bits) {  // surprisal: white (0 bits) to deep orange (8 bits and more)
    const s = Math.min(bits / 8, 1);
    const c = [255 - 22 * s, 255 - 150 * s, 255 - 215 * s].map(Math.round);
    return "rgb(" + c.join(",") + ")";
  }
  function visible(ch) {
    const map = {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5", "\r": "\u240d"};
    if (ch in map) return map[ch];
    const code = ch.codePointAt(0);
    return code < 32 || code === 127 ? "U+" + code.toString(16).toUpperCase().padStart(4, "0") : ch;
  }
  function levelValue(block, level) {
    return block.lo + level * (block.hi - block.lo) / (data.levels - 1);
  }
  function paint() {
    if (!current) {
      spans.forEach((s, i) => {
        const b = data.surprisal[i];
        s.style.backgroundColor = b === null ? "" : heat(b);
      });
      legend.innerHTML = "0 bits <i style=\"background:linear-gradient(90deg," + heat(0) + "," +
        heat(4) + "," + heat(8) + ")\"></i> 8+ bits";
    } else {
      const levels = values, top = data.levels - 1;
      spans.forEach((s, i) => { s.style.backgroundColor = diverging(levels[i] / top); });
      const block = data.blocks[current.split(":").slice(0, 2).join(":")];
      legend.innerHTML = block.lo + " <i style=\"background:linear-gradient(90deg," +
        diverging(0) + "," + diverging(0.5) + "," + diverging(1) + ")\"></i> " + block.hi;
    }
  }
  function select(key) {
    current = key && key in data.units ? key : "";
    values = current ? unpack(current) : null;
    document.body.dataset.selectedUnit = current;
    document.querySelectorAll("button.unit").forEach(b => {
      b.classList.toggle("selected", b.dataset.unit === current);
    });
    const block = current ? current.split(":").slice(0, 2).join(":") : "";
    if (blockSelect.value !== block) { blockSelect.value = block; fillUnits(); }
    if (current) unitSelect.value = current;
    paint();
  }
  function fillUnits() {
    const block = data.blocks[blockSelect.value];
    unitSelect.innerHTML = "";
    unitSelect.disabled = !block;
    if (!block) return;
    block.stored.forEach(j => {
      const o = document.createElement("option");
      o.value = blockSelect.value + ":" + j;
      o.textContent = "unit " + j;
      unitSelect.appendChild(o);
    });
  }
  Object.entries(data.blocks).forEach(([key, block]) => {
    if (!block.stored.length) return;
    const o = document.createElement("option");
    o.value = key;
    o.textContent = "layer " + block.layer + ": " + block.label +
      (block.stored.length < block.total ? " (" + block.stored.length + " of " + block.total +
       " units stored)" : "");
    blockSelect.appendChild(o);
  });
  blockSelect.addEventListener("change", () => {
    fillUnits();
    select(unitSelect.disabled ? "" : unitSelect.value);
  });
  unitSelect.addEventListener("change", () => select(unitSelect.value));
  document.querySelectorAll("button.unit").forEach(b => {
    b.addEventListener("click", () => {
      select(b.dataset.unit);
      const box = excerpt.getBoundingClientRect();  // bring the recoloured text into view
      if (box.bottom < 0 || box.top > window.innerHeight) excerpt.scrollIntoView({block: "start"});
    });
  });

  const head = document.getElementById("probe-head"), guesses = document.getElementById("guesses");
  let probed = null;
  function probe(span) {
    if (probed) probed.classList.remove("on");
    probed = span;
    span.classList.add("on");
    const i = Number(span.dataset.charIndex), ch = chars[i];
    const bits = data.surprisal[i];
    let text = "'" + visible(ch) + "' (character " + i + "): " +
      (bits === null ? "first character, not predicted" : bits.toFixed(2) + " bits");
    if (current) {
      const block = data.blocks[current.split(":").slice(0, 2).join(":")];
      text += "; unit " + current + " \u2248 " + levelValue(block, values[i]).toFixed(2);
    }
    head.textContent = text + "; the next character might be:";
    guesses.innerHTML = "";
    data.top_ids[i].forEach((id, k) => {
      const p = data.top_permille[i][k] / 10;
      const li = document.createElement("li");
      li.className = "guess";
      li.innerHTML = "<b></b><span class=\"bar\"></span><span class=\"p\"></span>";
      li.firstChild.textContent = visible(data.vocab[id]);
      li.children[1].style.width = Math.max(p, 1) + "%";
      li.children[2].textContent = p.toFixed(1) + "%";
      guesses.appendChild(li);
    });
  }
  const chars = spans.map(s => s.classList.contains("nl") ? "\n" : s.textContent);
  excerpt.addEventListener("mouseover", e => {
    if (e.target.dataset && "charIndex" in e.target.dataset) probe(e.target);
  });
  excerpt.addEventListener("click", e => {
    if (e.target.dataset && "charIndex" in e.target.dataset) probe(e.target);
  });

  // Chart read-outs: the record nearest the pointer.
  document.querySelectorAll("svg[data-chart]").forEach(svg => {
    const g = svg.querySelector(".geometry"), cursor = svg.querySelector(".cursor");
    const out = document.querySelector(".readout[data-for=\"" + svg.dataset.chart + "\"]");
    if (!g || !history.length) return;
    const x0 = +g.dataset.x0, x1 = +g.dataset.x1, s0 = +g.dataset.s0, s1 = +g.dataset.s1;
    function show(e) {
      const m = svg.getScreenCTM();
      if (!m) return;
      const x = (e.clientX - m.e) / m.a, step = s0 + (x - x0) / (x1 - x0) * (s1 - s0);
      let best = history[0];
      history.forEach(r => { if (Math.abs(r.step - step) < Math.abs(best.step - step)) best = r; });
      const cx = x0 + (best.step - s0) / (s1 - s0) * (x1 - x0);
      cursor.setAttribute("x1", cx); cursor.setAttribute("x2", cx);
      cursor.setAttribute("visibility", "visible");
      const parts = ["step " + best.step];
      if (best.epoch != null) parts.push("epoch " + best.epoch.toFixed(2));
      if (best.train_loss != null) parts.push("train " + best.train_loss.toFixed(4));
      if (best.val_loss != null) parts.push("val " + best.val_loss.toFixed(4));
      if (best.lr != null) parts.push("lr " + best.lr.toPrecision(3));
      if (best.chars_per_s != null) parts.push(Math.round(best.chars_per_s) + " chars/s");
      out.textContent = parts.join(" \u00b7 ");
    }
    svg.addEventListener("pointermove", show);
    svg.addEventListener("pointerdown", show);
  });
  select("");
})();
