// The page of `rnn export`: a person primes the model and watches it write, or scores a text;
// the query hooks ?prime=&length=&argmax=&temperature=&top_k=&top_p=&stop=&seed= and ?score=
// do the same on load. document.body.dataset.state tells where it is: loading, ready,
// running, done (the hooks have finished) or error.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const MAX_LENGTH = 1000000;
  const CHUNK_MS = 30; // the page redraws (and Stop is heard) between chunks of this long

  let model;
  let busy = false;
  let stopRequested = false;

  function setState(state) {
    body.dataset.state = state;
    const running = state === "running";
    $("generate").disabled = running;
    $("score-button").disabled = running;
    $("stop").disabled = !running;
  }

  function status(text, isError = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", isError);
  }

  const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

  // "\n", "\t", "\r" and "\\" in a text field, as `rnn sample --stop` reads them.
  function unescape(text) {
    return text.replace(/\\(.)/gs, (whole, ch) => {
      const known = { n: "\n", t: "\t", r: "\r", "\\": "\\" }[ch];
      if (known === undefined) throw new Error(`unknown escape ${whole} in the stop text`);
      return known;
    });
  }

  function number(value, name, { integer = false, min = -Infinity, max = Infinity, above }) {
    const text = String(value).trim();
    const x = Number(text);
    const ok =
      text !== "" &&
      Number.isFinite(x) &&
      (!integer || Number.isInteger(x)) &&
      x >= min &&
      x <= max &&
      (above === undefined || x > above);
    if (!ok) {
      const range = above !== undefined ? `above ${above}` : `from ${min} to ${max}`;
      throw new Error(`${name} must be ${integer ? "an integer" : "a number"} ${range}, got "${text}"`);
    }
    return x;
  }

  function readSettings() {
    const seedText = $("seed").value.trim();
    return {
      prime: $("prime").value,
      length: number($("length").value, "length", { integer: true, min: 0, max: MAX_LENGTH }),
      temperature: number($("temperature").value, "temperature", { above: 0, max: 1e6 }),
      topK: number($("top-k").value, "top-k", { integer: true, min: 0, max: 1e9 }),
      topP: number($("top-p").value, "top-p", { above: 0, max: 1 }),
      stop: unescape($("stop-text").value),
      argmax: $("argmax").checked,
      seed:
        seedText === ""
          ? null
          : number(seedText, "seed", { integer: true, min: 0, max: 4294967295 }),
    };
  }

  function startText(prime) {
    if (prime) return prime;
    return model.ids.has("\n") ? "\n" : model.vocab[0];
  }

  // Generates as `rnn sample` does: the prime (or a newline) read first, then up to
  // settings.length characters, ending early at the stop text or the Stop button.
  async function generate(settings) {
    const { ids, unknown } = model.encode(settings.prime);
    const prime = ids.map((i) => model.vocab[i]).join("");
    let seed = settings.seed;
    if (seed === null && !settings.argmax) {
      seed = crypto.getRandomValues(new Uint32Array(1))[0];
      $("seed").placeholder = `last: ${seed}`;
    }
    const random = RNN.generator(seed ?? 0);
    const output = $("output");
    output.textContent = "";
    const primeSpan = document.createElement("span");
    primeSpan.className = "prime";
    primeSpan.textContent = prime;
    const written = document.createElement("span");
    written.className = "written";
    output.append(primeSpan, written);
    model.reset();
    let logits;
    let reason = "length";
    const started = performance.now();
    // a long prime is read in chunks too, so that the page stays live and Stop is heard
    let primeUntil = started + CHUNK_MS;
    for (const ch of startText(prime)) {
      logits = model.step(model.ids.get(ch));
      if (performance.now() > primeUntil) {
        await tick();
        if (stopRequested) {
          reason = "button";
          break;
        }
        primeUntil = performance.now() + CHUNK_MS;
      }
    }
    let text = prime;
    let count = 0;
    while (count < settings.length && reason === "length") {
      const until = performance.now() + CHUNK_MS;
      let piece = "";
      while (count < settings.length && performance.now() < until) {
        const id = RNN.pick(logits, settings, settings.argmax ? 0 : random());
        const ch = model.vocab[id];
        text += ch;
        piece += ch;
        count++;
        if (settings.stop && text.endsWith(settings.stop)) {
          reason = "stop";
          break;
        }
        if (count < settings.length) logits = model.step(id);
      }
      written.append(piece);
      if (reason === "length" && count < settings.length) {
        await tick();
        if (stopRequested) reason = "button";
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const why = { length: "reached the length", stop: "ended at the stop text", button: "stopped" };
    const rate = seconds > 0 ? `, ${Math.round(count / seconds).toLocaleString("en")} characters/s` : "";
    const seedNote = settings.argmax ? "argmax" : `seed ${seed}`;
    const dropped = unknown.length ? `; left out of the prime: ${JSON.stringify(unknown.join(""))}` : "";
    status(`${count.toLocaleString("en")} characters (${why[reason]}; ${seedNote}${rate})${dropped}`);
  }

  // Scores as `rnn eval --batch-size 1` scores a file: characters outside the vocabulary left
  // out, then every character after the first predicted from all before it, from a zero state.
  async function score(text) {
    const { ids, unknown } = model.encode(text);
    const out = $("score");
    out.textContent = "";
    delete out.dataset.loss;
    $("score-detail").textContent = "";
    if (ids.length < 2) {
      $("score-detail").textContent = "no characters to score (it needs two the model knows)";
      return;
    }
    model.reset();
    let total = 0;
    let logits = model.step(ids[0]);
    let until = performance.now() + CHUNK_MS;
    for (let i = 1; i < ids.length; i++) {
      total -= RNN.logProb(logits, ids[i]);
      if (i + 1 < ids.length) logits = model.step(ids[i]);
      if (performance.now() > until) {
        await tick();
        if (stopRequested) {
          $("score-detail").textContent = `stopped after ${i.toLocaleString("en")} characters`;
          return;
        }
        until = performance.now() + CHUNK_MS;
      }
    }
    const loss = total / (ids.length - 1);
    out.textContent = loss.toFixed(6);
    out.dataset.loss = String(loss);
    const skipped = unknown.length ? `; left out: ${JSON.stringify(unknown.join(""))}` : "";
    $("score-detail").textContent =
      ` nats/char, ${(loss / Math.LN2).toFixed(4)} bits/char, perplexity ` +
      `${Math.exp(loss).toFixed(3)} over ${(ids.length - 1).toLocaleString("en")} characters${skipped}`;
  }

  async function run(job) {
    if (busy) return;
    busy = true;
    stopRequested = false;
    setState("running");
    let failed = false;
    try {
      await job();
    } catch (err) {
      status(err.message, true);
      failed = true;
    } finally {
      busy = false;
      setState(failed ? "error" : "done");
    }
  }

  // ?prime=...&length=...: fill the form from the query, then generate and/or score.
  function hooks() {
    const query = new URLSearchParams(location.search);
    const fields = {
      prime: "prime", length: "length", temperature: "temperature", top_k: "top-k",
      top_p: "top-p", seed: "seed",
    };
    for (const [key, id] of Object.entries(fields)) if (query.has(key)) $(id).value = query.get(key);
    if (query.has("stop")) $("stop-text").value = query.get("stop").replace(/\\/g, "\\\\")
      .replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(/\r/g, "\\r");
    if (query.has("argmax")) $("argmax").checked = !["", "0", "false"].includes(query.get("argmax"));
    const generating = ["prime", "length", "argmax", "temperature", "top_k", "top_p", "stop", "seed"].some((key) => query.has(key));
    const scoring = query.has("score");
    if (scoring) $("score-text").value = query.get("score");
    if (!generating && !scoring) return false;
    run(async () => {
      if (scoring) await score(query.get("score"));
      if (generating) await generate(readSettings());
    });
    return true;
  }

  function describe(spec) {
    const a = spec.about;
    const parts = [
      `${spec.cell} ${spec.layers}x${spec.hidden}`,
      spec.embedding ? `embedding ${spec.embedding}` : null,
      spec.mlp ? `mlp ${spec.mlp}` : null,
      `${spec.vocab.length} characters`,
      `${a.parameters.toLocaleString("en")} parameters as ${spec.precision}`,
      a.step != null ? `step ${a.step.toLocaleString("en")}` : null,
      a.best_val_loss != null ? `validation loss ${a.best_val_loss.toFixed(4)} nats/char` : null,
    ];
    $("about").textContent = parts.filter(Boolean).join(" · ");
  }

  function start() {
    setState("loading");
    try {
      const spec = JSON.parse($("model").textContent);
      model = new RNN.Model(spec);
      describe(spec);
    } catch (err) {
      status(`cannot load the model: ${err.message}`, true);
      setState("error");
      return;
    }
    $("generate").addEventListener("click", () => run(() => generate(readSettings())));
    $("score-button").addEventListener("click", () => run(() => score($("score-text").value)));
    $("stop").addEventListener("click", () => {
      stopRequested = true;
    });
    $("prime").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("generate").click();
    });
    status("ready");
    if (!hooks()) setState("ready");
  }

  start();
})();
