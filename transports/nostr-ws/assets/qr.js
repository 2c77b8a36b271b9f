// A QR code encoder (ISO/IEC 18004) written for the civkit order book, so
// that a BOLT12 offer's code is drawn in the browser with no network fetch
// and no third-party script. Byte mode, error correction level L (the
// largest capacity; screens are clean), versions 1 to 40, the mask with the
// lowest penalty.
"use strict";

const civkitQr = (() => {
  // Error-correction codewords per block, and blocks, at level L, by version.
  const ECC = [0, 7, 10, 15, 20, 26, 18, 20, 24, 30, 18, 20, 24, 26, 30, 22, 24, 28, 30, 28, 28,
    28, 28, 30, 30, 26, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30];
  const BLOCKS = [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 4, 6, 6, 6, 6, 7, 8,
    8, 9, 9, 10, 12, 12, 12, 13, 14, 15, 16, 17, 18, 19, 19, 20, 21, 22, 24, 25];
  const LEVEL_L = 1; // the two format bits of level L

  // Modules left for data and error correction once the patterns are drawn.
  function dataModules(version) {
    let n = (16 * version + 128) * version + 64;
    if (version >= 2) {
      const align = Math.floor(version / 7) + 2;
      n -= (25 * align - 10) * align - 55;
      if (version >= 7) n -= 36;
    }
    return n;
  }
  const totalCodewords = (v) => Math.floor(dataModules(v) / 8);
  const dataCodewords = (v) => totalCodewords(v) - ECC[v] * BLOCKS[v];

  // GF(256) with the QR polynomial x^8 + x^4 + x^3 + x^2 + 1.
  function mul(a, b) {
    let product = 0;
    for (let bit = 7; bit >= 0; bit--) {
      product = (product << 1) ^ ((product >>> 7) * 0x11d);
      if ((b >>> bit) & 1) product ^= a;
    }
    return product & 0xff;
  }

  // The generator polynomial of `degree` (its coefficients below the
  // leading 1, highest first): the product of (x - 2^i) for i < degree.
  function generator(degree) {
    const poly = new Array(degree).fill(0);
    poly[degree - 1] = 1;
    let root = 1;
    for (let i = 0; i < degree; i++) {
      for (let j = 0; j < degree; j++) {
        poly[j] = mul(poly[j], root) ^ (j + 1 < degree ? poly[j + 1] : 0);
      }
      root = mul(root, 2);
    }
    return poly;
  }

  // The Reed-Solomon check bytes of `data`.
  function checkBytes(data, gen) {
    const rem = new Array(gen.length).fill(0);
    for (const byte of data) {
      const factor = byte ^ rem.shift();
      rem.push(0);
      for (let i = 0; i < gen.length; i++) rem[i] ^= mul(gen[i], factor);
    }
    return rem;
  }

  // The smallest version that holds `bytes`, and its interleaved codewords.
  function codewords(bytes) {
    let version = 1;
    const countBits = (v) => (v <= 9 ? 8 : 16);
    while (4 + countBits(version) + 8 * bytes.length > 8 * dataCodewords(version)) {
      version++;
      if (version > 40) throw new Error("too long for a QR code");
    }
    const bits = [];
    const put = (value, length) => {
      for (let i = length - 1; i >= 0; i--) bits.push((value >>> i) & 1);
    };
    put(0b0100, 4); // byte mode
    put(bytes.length, countBits(version));
    for (const b of bytes) put(b, 8);
    const capacity = 8 * dataCodewords(version);
    put(0, Math.min(4, capacity - bits.length)); // terminator
    put(0, (8 - (bits.length % 8)) % 8);
    for (let pad = 0xec; bits.length < capacity; pad ^= 0xec ^ 0x11) put(pad, 8);
    const data = [];
    for (let i = 0; i < bits.length; i += 8) {
      data.push(bits.slice(i, i + 8).reduce((acc, bit) => (acc << 1) | bit, 0));
    }
    // Split into blocks (the last ones one byte longer), add each block's
    // check bytes, then interleave column by column.
    const blocks = BLOCKS[version];
    const ecc = ECC[version];
    const total = totalCodewords(version);
    const shortBlocks = blocks - (total % blocks);
    const shortData = Math.floor(total / blocks) - ecc;
    const gen = generator(ecc);
    const split = [];
    for (let i = 0, at = 0; i < blocks; i++) {
      const length = shortData + (i < shortBlocks ? 0 : 1);
      const block = data.slice(at, at + length);
      at += length;
      split.push({ data: block, check: checkBytes(block, gen) });
    }
    const out = [];
    for (let i = 0; i <= shortData; i++) {
      for (const b of split) if (i < b.data.length) out.push(b.data[i]);
    }
    for (let i = 0; i < ecc; i++) for (const b of split) out.push(b.check[i]);
    return { version, codewords: out };
  }

  function alignmentCenters(version, size) {
    if (version === 1) return [];
    const count = Math.floor(version / 7) + 2;
    const step = version === 32 ? 26 : Math.ceil((4 * version + 4) / (2 * count - 2)) * 2;
    const centers = [6];
    for (let at = size - 7; centers.length < count; at -= step) centers.splice(1, 0, at);
    return centers;
  }

  const MASKS = [
    (x, y) => (x + y) % 2 === 0,
    (x, y) => y % 2 === 0,
    (x) => x % 3 === 0,
    (x, y) => (x + y) % 3 === 0,
    (x, y) => (Math.floor(x / 3) + Math.floor(y / 2)) % 2 === 0,
    (x, y) => ((x * y) % 2) + ((x * y) % 3) === 0,
    (x, y) => (((x * y) % 2) + ((x * y) % 3)) % 2 === 0,
    (x, y) => (((x + y) % 2) + ((x * y) % 3)) % 2 === 0,
  ];

  // The grid of modules (true: dark) for `version`, `codewords` and `mask`.
  function draw(version, words, mask) {
    const size = 4 * version + 17;
    const dark = Array.from({ length: size }, () => new Array(size).fill(false));
    const fixed = Array.from({ length: size }, () => new Array(size).fill(false));
    const set = (x, y, on) => {
      dark[y][x] = on;
      fixed[y][x] = true;
    };
    for (let i = 0; i < size; i++) {
      set(6, i, i % 2 === 0);
      set(i, 6, i % 2 === 0);
    }
    for (const [cx, cy] of [[3, 3], [size - 4, 3], [3, size - 4]]) {
      for (let dy = -4; dy <= 4; dy++) {
        for (let dx = -4; dx <= 4; dx++) {
          const x = cx + dx;
          const y = cy + dy;
          if (x < 0 || y < 0 || x >= size || y >= size) continue;
          const ring = Math.max(Math.abs(dx), Math.abs(dy));
          set(x, y, ring !== 2 && ring !== 4);
        }
      }
    }
    const centers = alignmentCenters(version, size);
    for (const ay of centers) {
      for (const ax of centers) {
        const onFinder = (ax === 6 && (ay === 6 || ay === size - 7)) || (ax === size - 7 && ay === 6);
        if (onFinder) continue;
        for (let dy = -2; dy <= 2; dy++) {
          for (let dx = -2; dx <= 2; dx++) set(ax + dx, ay + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
        }
      }
    }
    // Format information: level and mask, with a BCH(15,5) code.
    const format = (LEVEL_L << 3) | mask;
    let rem = format;
    for (let i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
    const fbits = ((format << 10) | rem) ^ 0x5412;
    const fbit = (i) => ((fbits >>> i) & 1) === 1;
    for (let i = 0; i <= 5; i++) set(8, i, fbit(i));
    set(8, 7, fbit(6));
    set(8, 8, fbit(7));
    set(7, 8, fbit(8));
    for (let i = 9; i < 15; i++) set(14 - i, 8, fbit(i));
    for (let i = 0; i < 8; i++) set(size - 1 - i, 8, fbit(i));
    for (let i = 8; i < 15; i++) set(8, size - 15 + i, fbit(i));
    set(8, size - 8, true); // the dark module
    // Version information, from version 7: a BCH(18,6) code, twice.
    if (version >= 7) {
      let vrem = version;
      for (let i = 0; i < 12; i++) vrem = (vrem << 1) ^ ((vrem >>> 11) * 0x1f25);
      const vbits = (version << 12) | vrem;
      for (let i = 0; i < 18; i++) {
        const on = ((vbits >>> i) & 1) === 1;
        const a = size - 11 + (i % 3);
        const b = Math.floor(i / 3);
        set(a, b, on);
        set(b, a, on);
      }
    }
    // Data, in two-module columns from the bottom right, up then down.
    let bit = 0;
    for (let right = size - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5;
      const upward = ((right + 1) & 2) === 0;
      for (let step = 0; step < size; step++) {
        const y = upward ? size - 1 - step : step;
        for (let col = 0; col < 2; col++) {
          const x = right - col;
          if (fixed[y][x]) continue;
          const on = bit < words.length * 8 && ((words[bit >>> 3] >>> (7 - (bit & 7))) & 1) === 1;
          bit++;
          dark[y][x] = on !== MASKS[mask](x, y);
        }
      }
    }
    return dark;
  }

  // The standard's penalty: runs, 2x2 blocks, finder-like patterns, balance.
  function penalty(grid) {
    const size = grid.length;
    let score = 0;
    const lines = [];
    for (let i = 0; i < size; i++) {
      lines.push(grid[i]);
      lines.push(grid.map((row) => row[i]));
    }
    const finderLike = [true, false, true, true, true, false, true];
    for (const line of lines) {
      let run = 1;
      for (let i = 1; i <= size; i++) {
        if (i < size && line[i] === line[i - 1]) {
          run++;
        } else {
          if (run >= 5) score += run - 2;
          run = 1;
        }
      }
      for (let i = 0; i + 7 <= size; i++) {
        if (!finderLike.every((v, k) => line[i + k] === v)) continue;
        const lightBefore = i >= 4 && [1, 2, 3, 4].every((k) => !line[i - k]);
        const lightAfter = i + 11 <= size && [7, 8, 9, 10].every((k) => !line[i + k]);
        if (lightBefore || lightAfter) score += 40;
      }
    }
    let darkCount = 0;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        if (grid[y][x]) darkCount++;
        if (x + 1 < size && y + 1 < size) {
          const c = grid[y][x];
          if (grid[y][x + 1] === c && grid[y + 1][x] === c && grid[y + 1][x + 1] === c) score += 3;
        }
      }
    }
    const percent = (darkCount * 100) / (size * size);
    score += Math.floor(Math.abs(percent - 50) / 5) * 10;
    return score;
  }

  // The modules of the QR code of `text` (UTF-8), as rows of booleans.
  function encode(text) {
    const { version, codewords: words } = codewords(new TextEncoder().encode(text));
    let best = null;
    for (let mask = 0; mask < 8; mask++) {
      const grid = draw(version, words, mask);
      const score = penalty(grid);
      if (best === null || score < best.score) best = { grid, score };
    }
    return best.grid;
  }

  // Draw the code of `text` on `canvas`, `scale` pixels per module, with
  // the four-module quiet zone.
  function render(canvas, text, scale) {
    const grid = encode(text);
    const size = grid.length + 8;
    canvas.width = size * scale;
    canvas.height = size * scale;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#000000";
    grid.forEach((row, y) => row.forEach((on, x) => {
      if (on) ctx.fillRect((x + 4) * scale, (y + 4) * scale, scale, scale);
    }));
  }

  return { encode, render };
})();
