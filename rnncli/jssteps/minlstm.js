// The minLSTM's inference step for pages written by `rnn export` (rnncli.scan.MINLSTM through
// scan_step_inplace). The contract every cell's step keeps is stated in lstm.js.
//
// minLSTM (no Wh: its gates see the input only), blocks [f; i; h~] of a:
// f' = s(f) / (s(f) + s(i)), i' = s(i) / (s(f) + s(i)); h = f' h + i' h~. Here s is
// 1 / (1 + exp(-x)), not lib.sigmoid: the ratio of two small sigmoids needs their relative
// precision, which the tanh identity lacks (as in scan.py). The sum is kept above the smallest
// normal float64 (numpy's float64 tiny), so that both sigmoids 0 give 0, not NaN.
RNN.registerCell("minlstm", {
  gates: 3,
  states: 1,
  params: [],
  step(a, state, p, scratch, lib) {
    const [h] = state;
    const H = h.length;
    const tiny = 2.2250738585072014e-308;
    for (let j = 0; j < H; j++) {
      const sf = 1 / (1 + Math.exp(-a[j]));
      const si = 1 / (1 + Math.exp(-a[H + j]));
      const total = Math.max(sf + si, tiny);
      h[j] = (sf / total) * h[j] + (si / total) * a[2 * H + j];
    }
  },
});
