// The minGRU's inference step for pages written by `rnn export` (rnncli.scan.MINGRU through
// scan_step_inplace). The contract every cell's step keeps is stated in lstm.js.
//
// minGRU (no Wh: its gates see the input only): z = sigmoid(a's first block), h~ = a's second;
// h = (1 - z) h + z h~, with the engine's sigmoid (lib.sigmoid, the tanh identity).
RNN.registerCell("mingru", {
  gates: 2,
  states: 1,
  params: [],
  step(a, state, p, scratch, lib) {
    const [h] = state;
    const H = h.length;
    for (let j = 0; j < H; j++) {
      const z = lib.sigmoid(a[j]);
      h[j] = (1 - z) * h[j] + z * a[H + j];
    }
  },
});
