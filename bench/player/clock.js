// The burnt-in clock of the test pattern, read back from the pixels a player shows (issue 15.6).
// The same geometry and check as producers/sources/testsrc.py `read_clock`: two rows of cells at the top of
// the frame, 48 bits of capture wall-clock ms, then 24 bits of frame counter and 8 check bits; any rendition
// of the ladder is a scale of the source frame, whose width (`srcW`) fixes the cell size.
(function (root) {
  const MS_BITS = 48, FRAME_BITS = 24, CHECK_BITS = 8, STRIP_CELLS = 48;

  function check(ms, frame) {
    let total = 0xA5;
    for (let i = 0; i < 6; i++) total += Math.floor(ms / 2 ** (8 * i)) % 256;
    for (let i = 0; i < 3; i++) total += Math.floor(frame / 2 ** (8 * i)) % 256;
    return total % 256;
  }

  // Strip rows of a frame of w x h pixels: [(y, [x of each cell])] for the ms row and the frame row.
  function geometry(w, h, srcW) {
    const refW = srcW || w;
    const refCell = Math.max(2, Math.floor(refW / (STRIP_CELLS + 4)));
    const cell = refCell * w / refW;
    const refH = Math.round(h * refW / w);
    const rh = Math.max(2, Math.floor(refH / 40)) * h / refH;
    const rows = [];
    for (const [row, n] of [[0, MS_BITS], [1, FRAME_BITS + CHECK_BITS]]) {
      let yc = Math.trunc(row * rh + Math.floor(rh / 2) * (h / refH) + rh / 2);
      yc = Math.min(Math.max(yc, 0), h - 1);
      const xs = [];
      for (let i = 0; i < n; i++) xs.push(Math.trunc(cell * 2 + (i + 0.5) * cell));
      rows.push([yc, xs]);
    }
    return { rows, height: Math.ceil(3 * rh) + 2 };
  }

  // luma(x, y) -> 0..255; returns {ms, frame} or null when the strip does not read (or fails its check).
  function decode(luma, w, h, srcW) {
    const g = geometry(w, h, srcW);
    const words = [];
    for (const [y, xs] of g.rows) {
      let v = 0;
      for (const x of xs) {
        if (x >= w) return null;
        v = v * 2 + (luma(x, y) > 128 ? 1 : 0);
      }
      words.push(v);
    }
    const ms = words[0];
    const frame = Math.floor(words[1] / 256), chk = words[1] % 256;
    return check(ms, frame) === chk ? { ms, frame } : null;
  }

  // Draw the top of the video's current frame into `canvas` and read the clock; null if not readable.
  function readVideo(video, canvas, srcW) {
    const w = video.videoWidth, h = video.videoHeight;
    if (!w || !h) return null;
    const g = geometry(w, h, srcW);
    const sh = Math.min(h, g.height);
    if (canvas.width !== w || canvas.height !== sh) { canvas.width = w; canvas.height = sh; }
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(video, 0, 0, w, sh, 0, 0, w, sh);
    const px = ctx.getImageData(0, 0, w, sh).data;
    const luma = (x, y) => {
      const i = (y * w + x) * 4;
      return 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
    };
    return decode(luma, w, h, srcW);
  }

  root.flClock = { decode, readVideo, geometry, check };
  if (typeof module !== 'undefined') module.exports = root.flClock;
})(typeof window !== 'undefined' ? window : globalThis);
