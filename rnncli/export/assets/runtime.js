// The model of a page written by `rnn export`: its weights decoded, its inference step, the
// rules that pick the next character, and scoring. No DOM here (page.js draws the page).
"use strict";

const RNN = (() => {
  const cells = {};

  // The cells' helpers (see the contract in rnncli/jssteps/lstm.js).
  const lib = {
    // out = x W, W a row-major matrix {rows, cols, data}; x has W.rows entries.
    vecMat(out, x, W) {
      out.fill(0);
      lib.addVecMat(out, x, W);
    },
    addVecMat(out, x, W) {
      const { rows, cols, data } = W;
      for (let i = 0; i < rows; i++) {
        const xi = x[i];
        if (xi === 0) continue;
        const base = i * cols;
        for (let j = 0; j < cols; j++) out[j] += xi * data[base + j];
      }
    },
    // as numpy's engine computes it: sigmoid(x) = (1 + tanh(x / 2)) / 2
    sigmoid: (x) => 0.5 + 0.5 * Math.tanh(0.5 * x),
    tanh: Math.tanh,
  };

  // The normalisations by name (rnncli.layers.NORMS): their parameters' names, and the step
  // that writes the norm of x into out, as the Stepper computes it.
  const norms = {
    rms: {
      params: ["g"],
      // out = x / sqrt(mean(x^2) + eps) * g (rnncli.layers.rmsnorm_step)
      apply(out, x, p, eps) {
        let sum = 0;
        for (let j = 0; j < x.length; j++) sum += x[j] * x[j];
        const s = Math.sqrt(sum / x.length + eps);
        for (let j = 0; j < x.length; j++) out[j] = (x[j] / s) * p.g[j];
      },
    },
  };

  function registerCell(name, cell) {
    cells[name] = cell;
  }

  function bytesOf(base64) {
    const text = atob(base64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  function halfToNumber(bits) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const fraction = bits & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24;
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }

  // A stored tensor as float64: "f32" and "f16" little-endian floats; "i8" signed bytes times
  // the float32 scale of their column (the last axis), as rnncli/export/tensors.py packs them.
  function decode(tensor) {
    const bytes = bytesOf(tensor.data);
    const view = new DataView(bytes.buffer);
    const size = tensor.shape.reduce((a, b) => a * b, 1);
    const out = new Float64Array(size);
    if (tensor.kind === "f32") {
      for (let i = 0; i < size; i++) out[i] = view.getFloat32(4 * i, true);
    } else if (tensor.kind === "f16") {
      for (let i = 0; i < size; i++) out[i] = halfToNumber(view.getUint16(2 * i, true));
    } else if (tensor.kind === "i8") {
      const scales = decode({ kind: "f32", shape: [tensor.shape.at(-1)], data: tensor.scales });
      const cols = scales.length;
      for (let i = 0; i < size; i++) out[i] = view.getInt8(i) * scales[i % cols];
    } else {
      throw new Error(`unknown tensor kind ${tensor.kind}`);
    }
    if (bytes.length !== size * { f32: 4, f16: 2, i8: 1 }[tensor.kind]) {
      throw new Error("a tensor's data does not fit its shape");
    }
    return out;
  }

  function matrix(tensor) {
    const [rows, cols] = tensor.shape;
    return { rows, cols, data: decode(tensor) };
  }

  // The network, one character at a time (rnncli.model.Stepper): layer 0's x Wx + b is a row of
  // the table (the embedding, when there is one, folded in); above it, x is the output of the
  // layer below: its h, or with residual connections (spec.residual, layers above the first)
  // h + x, then with an MLP after each layer (spec.mlp > 0) y = h + mlp(h). With a norm
  // (spec.norm), the input of every cell above the first, of every MLP and of the output layer
  // is normalised first (rnncli.model.Model). With a convolution (spec.conv = K > 0), every
  // cell reads u = w_0 x_t + ... + w_{K-1} x_{t-K+1} of its input x (layer 0's: the embedding's
  // row), the K - 1 earlier inputs carried like the state; layer 0's table is then unfolded.
  class Model {
    constructor(spec) {
      const cell = cells[spec.cell];
      if (!cell) throw new Error(`this page has no step for the ${spec.cell} cell`);
      if (cell.gates !== spec.gates || cell.states !== spec.states) {
        throw new Error(`the ${spec.cell} step does not fit the model's gates and states`);
      }
      this.cell = cell;
      this.vocab = spec.vocab;
      this.ids = new Map(spec.vocab.map((ch, i) => [ch, i]));
      const t = spec.tensors;
      const H = spec.hidden;
      this.conv = spec.conv;
      this.table = this.conv ? matrix(t["embed.W"]) : matrix(t.table);
      this.state = Array.from({ length: spec.layers }, () =>
        Array.from({ length: cell.states }, () => new Float64Array(H)),
      );
      // each layer's K - 1 earlier inputs, most recent first (the state's slots after the cell's)
      this.carry = this.state.map(() =>
        Array.from({ length: Math.max(this.conv - 1, 0) }, () => new Float64Array(H)),
      );
      this.layers = [];
      for (let l = 0; l < spec.layers; l++) {
        const p = {};
        // a cell without a recurrent product (minGRU, minLSTM) has no Wh
        if (t[`rnn.${l}.Wh`]) p.Wh = matrix(t[`rnn.${l}.Wh`]);
        if (l > 0 || this.conv) {
          p.Wx = matrix(t[`rnn.${l}.Wx`]);
          p.b = decode(t[`rnn.${l}.b`]);
        }
        if (this.conv) p.w = matrix(t[`conv.${l}.w`]);
        for (const name of cell.params) p[name] = decode(t[`rnn.${l}.${name}`]);
        this.layers.push(p);
      }
      this.mlps = [];
      if (spec.mlp > 0) {
        for (let l = 0; l < spec.layers; l++) {
          const [W1, b1, W2, b2] = ["W1", "b1", "W2", "b2"].map((n) => t[`mlp.${l}.${n}`]);
          this.mlps.push({ W1: matrix(W1), b1: decode(b1), W2: matrix(W2), b2: decode(b2) });
        }
        this.hidden = new Float64Array(spec.mlp);
      }
      this.residual = spec.residual;
      this.norm = spec.norm === "none" ? null : norms[spec.norm];
      if (spec.norm !== "none" && !this.norm) throw new Error(`this page has no ${spec.norm} norm`);
      this.normEps = spec.norm_eps;
      this.normParams = {}; // place (e.g. "norm.1") -> its parameters by name
      for (const place of spec.norm_places) {
        const names = this.norm.params;
        this.normParams[place] = Object.fromEntries(names.map((n) => [n, decode(t[`${place}.${n}`])]));
      }
      const buffers = () => this.state.map(() => new Float64Array(H));
      // each layer's output: its h, the residual sum's buffer, or the MLP's own buffer
      this.sums = buffers();
      this.normed = buffers(); // the normalised input of a cell
      this.mlpIn = buffers(); // the normalised input of an MLP
      this.convolved = buffers(); // the convolution of a cell's input
      this.embedded = new Float64Array(H); // layer 0's input with a convolution
      this.topIn = new Float64Array(H);
      this.outputs = this.state.map((layer, l) => {
        if (this.mlps[l]) return new Float64Array(H);
        return this.residual && l > 0 ? this.sums[l] : layer[0];
      });
      this.outW = matrix(t["out.W"]);
      this.outB = decode(t["out.b"]);
      this.a = new Float64Array(cell.gates * H);
      this.scratch = new Float64Array(cell.gates * H);
      this.logits = new Float64Array(spec.vocab.length);
    }

    reset() {
      for (const layer of [...this.state, ...this.carry]) for (const s of layer) s.fill(0);
    }

    // Reads character id; returns the logits of the next one (a buffer the next step reuses).
    step(id) {
      const { a, cell, scratch, table } = this;
      const row = table.data.subarray(id * table.cols, (id + 1) * table.cols);
      if (this.conv) {
        this.embedded.set(row);
        a.set(this.layers[0].b);
        lib.addVecMat(a, this.convolve(0, this.embedded), this.layers[0].Wx);
      } else {
        a.set(row); // x Wx + b, folded into the table
      }
      cell.step(a, this.state[0], this.layers[0], scratch, lib);
      this.mlp(0, this.state[0][0]);
      for (let l = 1; l < this.layers.length; l++) {
        const p = this.layers[l];
        a.set(p.b);
        const x = this.normalised(this.normed[l], this.outputs[l - 1], `norm.${l}`);
        lib.addVecMat(a, this.convolve(l, x), p.Wx);
        cell.step(a, this.state[l], p, scratch, lib);
        this.mlp(l, this.residualSum(l));
      }
      const top = this.normalised(this.topIn, this.outputs[this.outputs.length - 1], "outnorm");
      this.logits.set(this.outB);
      lib.addVecMat(this.logits, top, this.outW);
      return this.logits;
    }

    // x normalised by the norm at place into out, or x itself without a norm.
    normalised(out, x, place) {
      if (!this.norm) return x;
      this.norm.apply(out, x, this.normParams[place], this.normEps);
      return out;
    }

    // The convolution of layer l's input x, x itself without one; x joins the carried inputs
    // (rnncli.layers.causal_conv_step).
    convolve(l, x) {
      if (!this.conv) return x;
      const w = this.layers[l].w;
      const H = x.length;
      const carry = this.carry[l];
      const out = this.convolved[l];
      for (let j = 0; j < H; j++) out[j] = x[j] * w.data[j];
      carry.forEach((earlier, k) => {
        const base = (k + 1) * H;
        for (let j = 0; j < H; j++) out[j] += earlier[j] * w.data[base + j];
      });
      for (let k = carry.length - 1; k > 0; k--) carry[k].set(carry[k - 1]);
      if (carry.length) carry[0].set(x);
      return out;
    }

    // Layer l's h plus its input with residual connections (l > 0), else its h.
    residualSum(l) {
      const h = this.state[l][0];
      if (!this.residual) return h;
      const x = this.outputs[l - 1];
      const sum = this.sums[l];
      for (let j = 0; j < h.length; j++) sum[j] = h[j] + x[j];
      return sum;
    }

    // Layer l's output y = h + relu(x W1 + b1) W2 + b2, x = h or its norm, h the cell's output
    // (or the residual sum), as rnncli.layers.mlp_step computes it.
    mlp(l, h) {
      const m = this.mlps[l];
      if (!m) return;
      const u = this.hidden;
      const y = this.outputs[l];
      lib.vecMat(u, this.normalised(this.mlpIn[l], h, `mlpnorm.${l}`), m.W1);
      for (let k = 0; k < u.length; k++) u[k] = Math.max(u[k] + m.b1[k], 0);
      lib.vecMat(y, u, m.W2);
      for (let j = 0; j < y.length; j++) y[j] = y[j] + m.b2[j] + h[j];
    }

    // The text's characters as ids, leaving out those outside the vocabulary (by code point).
    encode(text) {
      const ids = [];
      const unknown = new Set();
      for (const ch of text) {
        const id = this.ids.get(ch);
        if (id === undefined) unknown.add(ch);
        else ids.push(id);
      }
      return { ids, unknown: [...unknown].sort() };
    }
  }

  // A small seeded generator of uniform numbers in [0, 1) (mulberry32): the same seed gives the
  // same text in any browser. It is not numpy's, so a seed draws other text than `rnn sample`.
  function generator(seed) {
    let s = seed >>> 0;
    return () => {
      s = (s + 0x6d2b79f5) >>> 0;
      let t = s;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  // The next character's id from the logits, by rnncli.sample.drawer's rules: argmax takes the
  // first most likely; otherwise softmax(logits / temperature), cut to the top k (ties with
  // the k-th kept) and to the smallest set reaching top_p, drawn by inverse CDF with u in [0, 1).
  function pick(logits, { argmax, temperature = 1, topK = 0, topP = 1 }, u) {
    const V = logits.length;
    if (argmax) {
      let best = 0;
      for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
      return best;
    }
    // The largest logit taken away first (as rnncli.sample.scaled does): it stays exactly 0 at
    // any temperature, so one small enough to overflow the others to -Infinity draws the most
    // likely character, as the limit does, never NaN.
    let top = -Infinity;
    for (let i = 0; i < V; i++) if (logits[i] > top) top = logits[i];
    const z = Float64Array.from(logits, (x) => (x - top) / temperature);
    if (topK > 0 && topK < V) {
      const kth = Float64Array.from(z).sort()[V - topK];
      for (let i = 0; i < V; i++) if (z[i] < kth) z[i] = -Infinity;
    }
    const p = Float64Array.from(z, (x) => Math.exp(x));
    if (topP < 1) {
      let total = 0;
      for (let i = 0; i < V; i++) total += p[i];
      const order = Array.from(p.keys()).sort((i, j) => p[j] - p[i] || i - j);
      let cumulative = 0;
      let keep = 0;
      while (keep < V && cumulative / total < topP) cumulative += p[order[keep++]];
      for (let r = Math.max(keep, 1); r < V; r++) p[order[r]] = 0;
    }
    let total = 0;
    for (let i = 0; i < V; i++) total += p[i];
    const target = u * total;
    let cumulative = 0;
    for (let i = 0; i < V; i++) {
      cumulative += p[i];
      if (!(cumulative < target)) return i;
    }
    return V - 1;
  }

  // log softmax(logits)[id], in float64.
  function logProb(logits, id) {
    let top = -Infinity;
    for (const x of logits) if (x > top) top = x;
    let sum = 0;
    for (const x of logits) sum += Math.exp(x - top);
    return logits[id] - top - Math.log(sum);
  }

  return { registerCell, Model, generator, pick, logProb, decode };
})();
