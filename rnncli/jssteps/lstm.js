// The LSTM's inference step for pages written by `rnn export` (rnncli.layers.lstm_step_inplace).
//
// The contract every cell's step keeps (rnncli/jssteps/<cell>.js, read by rnncli.cells.js_source):
// the file is one statement, RNN.registerCell(name, {gates, states, params, step}), where
//   gates  G: the blocks of H columns in Wx, Wh and b (as in the Python Cell);
//   states S: the state vectors of a layer, h first;
//   params:   the names of the layer's parameters after Wx, Wh and b (each a Float64Array(H));
//   step(a, state, p, scratch, lib): advance one layer by one character, in place.
//     a:       Float64Array(G*H) holding x Wx + b for this step (the layer's input part); the
//              step may overwrite it;
//     state:   array of S Float64Array(H), the previous state, overwritten with the next;
//     p:       the layer's parameters by name: p.Wh a matrix {rows: H, cols: G*H, data}, and
//              those named in params;
//     scratch: Float64Array(G*H) the step may use as it likes;
//     lib:     lib.vecMat(out, x, W) sets out = x W; lib.addVecMat(out, x, W) adds x W to out;
//              lib.sigmoid(x), lib.tanh(x).
// Everything is float64 (JavaScript numbers), so the page agrees with numpy to rounding.
//
// LSTM: a += h Wh; gates i, f, o, g = sigmoid, sigmoid, sigmoid, tanh of its four blocks;
// c = f c + i g; h = o tanh(c).
RNN.registerCell("lstm", {
  gates: 4,
  states: 2,
  params: [],
  step(a, state, p, scratch, lib) {
    const [h, c] = state;
    const H = h.length;
    lib.addVecMat(a, h, p.Wh);
    for (let j = 0; j < H; j++) {
      const i = lib.sigmoid(a[j]);
      const f = lib.sigmoid(a[H + j]);
      const o = lib.sigmoid(a[2 * H + j]);
      const g = lib.tanh(a[3 * H + j]);
      c[j] = f * c[j] + i * g;
      h[j] = o * lib.tanh(c[j]);
    }
  },
});
