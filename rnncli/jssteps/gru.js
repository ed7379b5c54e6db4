// The GRU's inference step for pages written by `rnn export` (rnncli.layers.gru_step_inplace,
// the PyTorch/cuDNN variant). The contract every cell's step keeps is stated in lstm.js.
//
// GRU: g = h Wh; r, z = sigmoid of the first two blocks of a + g;
// n = tanh(a's third block + r (g's third block + bh)); h = (1 - z) n + z h.
RNN.registerCell("gru", {
  gates: 3,
  states: 1,
  params: ["bh"],
  step(a, state, p, scratch, lib) {
    const [h] = state;
    const H = h.length;
    lib.vecMat(scratch, h, p.Wh);
    for (let j = 0; j < H; j++) {
      const r = lib.sigmoid(a[j] + scratch[j]);
      const z = lib.sigmoid(a[H + j] + scratch[H + j]);
      const n = lib.tanh(a[2 * H + j] + r * (scratch[2 * H + j] + p.bh[j]));
      h[j] = n + z * (h[j] - n);
    }
  },
});
