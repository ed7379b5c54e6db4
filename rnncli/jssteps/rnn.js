// The vanilla RNN's inference step for pages written by `rnn export`
// (rnncli.layers.rnn_step_inplace). The contract every cell's step keeps is stated in lstm.js.
//
// RNN: h = tanh(x Wx + b + h Wh).
RNN.registerCell("rnn", {
  gates: 1,
  states: 1,
  params: [],
  step(a, state, p, scratch, lib) {
    const [h] = state;
    lib.addVecMat(a, h, p.Wh);
    for (let j = 0; j < h.length; j++) h[j] = lib.tanh(a[j]);
  },
});
