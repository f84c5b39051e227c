// The page `modnet-prune web` writes: every model of site.json mattes the same photo, side by
// side, under the MODNet inference protocol that the exporter records in each ONNX file's
// metadata. Pre- and post-processing follow modnet_prune.deploy.matting.Matter exactly
// (area resize = adaptive average pooling), so the mattes equal ONNX Runtime's in Python.
// window.modnetPage exposes the results to scripts (the end-to-end test reads it).

const REQUIRED_METADATA = ['normalization', 'size_multiple', 'reference_size', 'inference_protocol'];
const WARMUP_RUNS = 1;
const WEBCAM_WINDOW = 15; // frames in the webcam's rolling latency median

const $ = (selector) => document.querySelector(selector);
const page = window.modnetPage = { models: [], mattes: 0, firstMatteMs: null, error: null };

// ---------------------------------------------------------------- ONNX metadata

function readVarint(bytes, at) {
  let value = 0, scale = 1, byte;
  do {
    byte = bytes[at++];
    value += (byte & 0x7f) * scale;  // multiply, not shift: lengths may pass 2**31
    scale *= 128;
  } while (byte & 0x80);
  return [value, at];
}

// The fields of one protobuf message: [[number, wireType, value or [start, end]], ...].
function protoFields(bytes, start, end) {
  const fields = [];
  let at = start;
  while (at < end) {
    let tag, value;
    [tag, at] = readVarint(bytes, at);
    const number = Math.floor(tag / 8), wire = tag % 8;
    if (wire === 0) [value, at] = readVarint(bytes, at);
    else if (wire === 1) { value = null; at += 8; }
    else if (wire === 5) { value = null; at += 4; }
    else if (wire === 2) { let n; [n, at] = readVarint(bytes, at); value = [at, at + n]; at += n; }
    else throw new Error('not an ONNX file (bad protobuf)');
    if (at > end) throw new Error('not an ONNX file (truncated protobuf)');
    fields.push([number, wire, value]);
  }
  return fields;
}

// ModelProto.metadata_props (field 14) as a plain object.
function onnxMetadata(bytes) {
  const text = new TextDecoder();
  const metadata = {};
  for (const [number, wire, span] of protoFields(bytes, 0, bytes.length)) {
    if (number !== 14 || wire !== 2) continue;
    const entry = {};
    for (const [key, kwire, kspan] of protoFields(bytes, span[0], span[1])) {
      if (kwire === 2) entry[key] = text.decode(bytes.subarray(kspan[0], kspan[1]));
    }
    metadata[entry[1]] = entry[2];
  }
  return metadata;
}

function modnetProtocol(metadata) {
  const missing = REQUIRED_METADATA.filter((key) => !(key in metadata));
  if (missing.length) {
    throw new Error(`not a MODNet exported by modnet-prune: no ${missing.join(', ')} in its ` +
                    'metadata (export it with `modnet-prune export`)');
  }
  const norm = JSON.parse(metadata.normalization);
  if (norm.channels !== 'RGB' || norm.layout !== 'NCHW') {
    throw new Error(`unsupported input layout ${norm.channels}/${norm.layout}`);
  }
  return { scale: norm.scale, mean: norm.mean, std: norm.std,
           multiple: Number(metadata.size_multiple), ref: Number(metadata.reference_size) };
}

// ---------------------------------------------------------------- the inference protocol

function protocolSize(height, width, ref, multiple) {
  if (Math.max(height, width) < ref || Math.min(height, width) > ref) {
    if (width >= height) [height, width] = [ref, Math.trunc(width / height * ref)];
    else [height, width] = [Math.trunc(height / width * ref), ref];
  }
  return [Math.max(height - height % multiple, multiple), Math.max(width - width % multiple, multiple)];
}

// Output cell i of n -> m averages input cells [start, end): torch's adaptive_avg_pool bounds.
function poolBounds(n, m) {
  const bounds = [];
  for (let i = 0; i < m; i++) bounds.push([Math.floor(i * n / m), Math.floor(((i + 1) * n + m - 1) / m)]);
  return bounds;
}

// Area resize of planar float32 images (channels x h x w -> channels x outH x outW).
function areaResize(src, channels, h, w, outH, outW) {
  if (h === outH && w === outW) return src;
  const cols = poolBounds(w, outW), rows = poolBounds(h, outH);
  const wide = new Float32Array(channels * h * outW);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < h; y++) {
      const row = (c * h + y) * w, out = (c * h + y) * outW;
      for (let x = 0; x < outW; x++) {
        const [a, b] = cols[x];
        let sum = 0;
        for (let k = a; k < b; k++) sum += src[row + k];
        wide[out + x] = sum / (b - a);
      }
    }
  }
  const dst = new Float32Array(channels * outH * outW);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < outH; y++) {
      const [a, b] = rows[y], out = (c * outH + y) * outW;
      for (let x = 0; x < outW; x++) {
        let sum = 0;
        for (let k = a; k < b; k++) sum += wide[(c * h + k) * outW + x];
        dst[out + x] = sum / (b - a);
      }
    }
  }
  return dst;
}

function normalise(rgba, height, width, protocol) {
  const plane = height * width, x = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const mean = protocol.mean[c], std = protocol.std[c];
    for (let i = 0; i < plane; i++) x[c * plane + i] = (rgba[4 * i + c] * protocol.scale - mean) / std;
  }
  return x;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b), mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// ---------------------------------------------------------------- runtime

async function openRuntime() {
  const wanted = new URLSearchParams(location.search).get('backend');
  let backend = 'wasm';
  if (wanted !== 'wasm' && navigator.gpu) {
    const adapter = await navigator.gpu.requestAdapter().catch(() => null);
    if (adapter) backend = 'webgpu';
  }
  if (wanted === 'webgpu' && backend !== 'webgpu') throw new Error('WebGPU is not available in this browser');
  const ort = await import(backend === 'webgpu' ? './ort/ort.webgpu.min.mjs' : './ort/ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = new URL('ort/', location.href).href;
  ort.env.wasm.numThreads = crossOriginIsolated ? navigator.hardwareConcurrency : 1;
  ort.env.logLevel = 'error';
  return { ort, backend, providers: backend === 'webgpu' ? ['webgpu', 'wasm'] : ['wasm'] };
}

async function loadModel(runtime, entry, card) {
  const model = { ...entry, card, session: null, error: null, latencies: [] };
  try {
    const response = await fetch(entry.file);
    if (!response.ok) throw new Error(`cannot download ${entry.file} (HTTP ${response.status})`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    model.metadata = onnxMetadata(bytes);
    model.protocol = modnetProtocol(model.metadata);
    model.session = await runtime.ort.InferenceSession.create(bytes, {
      executionProviders: runtime.providers, graphOptimizationLevel: 'all' });
    const { inputNames, outputNames } = model.session;
    if (inputNames.length !== 1 || outputNames.length !== 1) {
      throw new Error(`expected one input and one output, found ${inputNames.length} and ${outputNames.length}`);
    }
    const shape = model.session.inputMetadata?.[0]?.shape ?? [];
    model.staticSize = shape.length === 4 && shape.slice(2).every(Number.isInteger) ? shape.slice(2) : null;
  } catch (error) {
    model.session = null;
    model.error = `${entry.name}: ${error.message ?? error}`;
  }
  showFacts(model);
  return model;
}

async function predict(runtime, model, input, size) {
  const tensor = new runtime.ort.Tensor('float32', input, [1, 3, size[0], size[1]]);
  const start = performance.now();
  const outputs = await model.session.run({ [model.session.inputNames[0]]: tensor });
  const ms = performance.now() - start;
  const matte = outputs[model.session.outputNames[0]];
  const data = await matte.getData();
  matte.dispose?.();
  return { data, ms };
}

// Every model mattes `image` (ImageData): `warmup` + `runs` runs each, interleaved across
// models so that a busy machine slows all of them alike; the last `keep` timings are kept.
// The mattes appear after the first round; the latencies when every round has run.
async function matteAll(runtime, image, { runs, warmup, keep }) {
  const jobs = prepare(image);
  for (let r = 0; r < warmup + runs; r++) {
    for (const job of jobs.filter((j) => j.model.session)) {
      try {
        const { data, ms } = await predict(runtime, job.model, job.input, job.size);
        if (r >= warmup) job.times.push(ms);
        job.matte = data;
      } catch (error) {
        job.model.error = `${job.model.name}: inference failed: ${error.message ?? error}`;
        job.model.session = null;
        showFacts(job.model);
      }
    }
    if (r === 0) show(jobs, image);
  }
  for (const job of jobs.filter((j) => j.model.session)) {
    job.model.latencies = job.model.latencies.concat(job.times).slice(-keep);
    job.model.frameMs = job.preMs + median(job.times) + job.postMs;
  }
  showLatencies();
  page.mattes++;
  showStatus();
}

// One job per loaded model: its input size and normalised input (shared by equal protocols).
function prepare(image) {
  const { width, height, data: rgba } = image;
  const inputs = new Map(), jobs = [];
  for (const model of page.models.filter((m) => m.session)) {
    const p = model.protocol;
    const size = model.staticSize ?? protocolSize(height, width, p.ref, p.multiple);
    const key = JSON.stringify([size, p.scale, p.mean, p.std]);
    if (!inputs.has(key)) {
      const start = performance.now();
      const input = areaResize(normalise(rgba, height, width, p), 3, height, width, size[0], size[1]);
      inputs.set(key, { input, preMs: performance.now() - start });
    }
    jobs.push({ model, size, ...inputs.get(key), times: [] });
  }
  return jobs;
}

// Each model's matte back at the image's size (area resize), drawn.
function show(jobs, image) {
  for (const job of jobs.filter((j) => j.model.session)) {
    const start = performance.now();
    job.model.alpha = areaResize(job.matte, 1, job.size[0], job.size[1], image.height, image.width);
    job.model.inputSize = job.size;
    job.postMs = performance.now() - start;
  }
  page.image = image;
  draw();
  if (page.firstMatteMs === null) page.firstMatteMs = performance.now();
  showStatus('timing…');
}

// ---------------------------------------------------------------- drawing

let background = { color: '#2f7dd1', image: null };

function backgroundPixels(width, height) {
  const canvas = new OffscreenCanvas(width, height), ctx = canvas.getContext('2d');
  ctx.fillStyle = background.color;
  ctx.fillRect(0, 0, width, height);
  if (background.image) {  // cover, then centre-crop: no distortion
    const { width: bw, height: bh } = background.image;
    const scale = Math.max(width / bw, height / bh);
    ctx.drawImage(background.image, (width - bw * scale) / 2, (height - bh * scale) / 2, bw * scale, bh * scale);
  }
  return ctx.getImageData(0, 0, width, height).data;
}

function draw() {
  const image = page.image;
  if (!image) return;
  const { width, height, data: rgba } = image;
  const back = backgroundPixels(width, height);
  for (const model of page.models.filter((m) => m.alpha && m.session)) {
    const matte = new ImageData(width, height), comp = new ImageData(width, height);
    for (let i = 0; i < width * height; i++) {
      const a = Math.min(1, Math.max(0, model.alpha[i]));
      matte.data.fill(Math.round(a * 255), 4 * i, 4 * i + 3);
      for (let c = 0; c < 3; c++) comp.data[4 * i + c] = Math.round(rgba[4 * i + c] * a + back[4 * i + c] * (1 - a));
      matte.data[4 * i + 3] = comp.data[4 * i + 3] = 255;
    }
    for (const [selector, pixels] of [['.matte', matte], ['.composite', comp]]) {
      const canvas = model.card.querySelector(selector);
      canvas.width = width;
      canvas.height = height;
      canvas.getContext('2d').putImageData(pixels, 0, 0);
    }
  }
}

function showLatencies() {
  const shown = page.models.filter((m) => m.alpha && m.session && m.latencies.length);
  for (const model of shown) {
    const ms = median(model.latencies);
    const speedup = model === shown[0] ? 'reference'
      : `${(median(shown[0].latencies) / ms).toFixed(2)}× vs ${shown[0].name}`;
    model.card.querySelector('.latency').innerHTML =
      `<strong>${ms.toFixed(1)} ms</strong> per inference at ${model.inputSize.join('×')} ` +
      `(median of ${model.latencies.length}) · ${model.frameMs.toFixed(1)} ms per frame · ` +
      `<strong class="speedup">${speedup}</strong>`;
  }
}

function showFacts(model) {
  const facts = [`${(model.bytes / 1e6).toFixed(2)} MB`];
  const m = model.metadata ?? {};
  if (m.params) facts.push(`${(Number(m.params) / 1e6).toFixed(2)} M params`);
  if (m.macs) facts.push(`${(Number(m.macs) / 1e9).toFixed(2)} GMACs at ${m.macs_input?.split('x').slice(2).join('×')}`);
  if (m.precision) facts.push(m.precision);
  model.card.querySelector('.name').textContent = model.name;
  model.card.querySelector('.facts').textContent = facts.join(' · ');
  const error = model.card.querySelector('.error');
  error.hidden = !model.error;
  error.textContent = model.error ?? '';
}

let runtimeLine = '';

function showStatus(extra = '') {
  const bytes = performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))
    .reduce((sum, entry) => sum + (entry.encodedBodySize || 0), 0);
  page.downloadBytes = bytes;
  const parts = [runtimeLine, `downloaded ${(bytes / 1e6).toFixed(1)} MB`];
  if (page.firstMatteMs !== null) parts.push(`first matte ${(page.firstMatteMs / 1000).toFixed(1)} s after opening the page`);
  if (extra) parts.push(extra);
  $('#status').textContent = parts.filter(Boolean).join(' · ');
}

// ---------------------------------------------------------------- inputs

async function imageDataOf(source) {
  const bitmap = source instanceof ImageBitmap ? source
    : await createImageBitmap(source, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
}

let busy = Promise.resolve();
function enqueue(task) {  // one matting at a time: sessions are not re-entrant
  busy = busy.then(task).catch((error) => showStatus(`error: ${error.message ?? error}`));
  return busy;
}

function runsWanted() {
  return Math.max(1, Math.min(50, Number($('#runs').value) || 1));
}

function mattePhoto(runtime, blob) {
  return enqueue(async () => {
    showStatus('matting…');
    const runs = runsWanted();
    await matteAll(runtime, await imageDataOf(blob), { runs, warmup: WARMUP_RUNS, keep: runs });
  });
}

let webcam = null;
async function toggleWebcam(runtime) {
  if (webcam) {
    webcam.getTracks().forEach((track) => track.stop());
    webcam = null;
    $('#webcam').textContent = 'Use the webcam';
    return;
  }
  webcam = await navigator.mediaDevices.getUserMedia({ video: true });
  $('#webcam').textContent = 'Stop the webcam';
  const video = Object.assign(document.createElement('video'), { srcObject: webcam, muted: true });
  await video.play();
  page.models.forEach((m) => { m.latencies = []; });
  while (webcam) {
    // a new frame each time, and a real task boundary: a chain of promises alone that resolve
    // at once would starve the page's event loop
    await new Promise((resolve) => video.requestVideoFrameCallback(resolve));
    const frame = await imageDataOf(await createImageBitmap(video));
    await enqueue(() => matteAll(runtime, frame, { runs: 1, warmup: 0, keep: WEBCAM_WINDOW }));
  }
}

function wireInputs(runtime, site) {
  $('#photo').addEventListener('change', (e) => e.target.files[0] && mattePhoto(runtime, e.target.files[0]));
  const drop = $('#drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const file = [...e.dataTransfer.files].find((f) => f.type.startsWith('image/'));
    if (file) mattePhoto(runtime, file);
  });
  for (const sample of site.samples) {
    const img = Object.assign(document.createElement('img'), { src: sample, alt: sample, title: 'matte this sample' });
    img.addEventListener('click', async () => mattePhoto(runtime, await (await fetch(sample)).blob()));
    $('#samples').append(img);
  }
  $('#webcam').addEventListener('click', () => toggleWebcam(runtime).catch((e) => showStatus(`webcam: ${e.message}`)));
  $('#bg-color').addEventListener('input', (e) => { background.color = e.target.value; draw(); });
  $('#bg-image').addEventListener('change', async (e) => {
    if (!e.target.files[0]) return;
    background.image = await createImageBitmap(e.target.files[0]);
    draw();
  });
  $('#bg-clear').addEventListener('click', () => { background.image = null; $('#bg-image').value = ''; draw(); });
}

// ---------------------------------------------------------------- start

async function main() {
  const site = await (await fetch('site.json')).json();
  const runtime = await openRuntime();
  const threads = runtime.ort.env.wasm.numThreads;
  runtimeLine = `onnxruntime-web ${site.onnxruntime_web} · ${runtime.backend === 'webgpu' ? 'WebGPU' : 'WASM SIMD'} · ` +
    `${threads} thread${threads > 1 ? 's' : ''}${crossOriginIsolated ? '' : ' (page not cross-origin isolated: use `modnet-prune serve`)'}`;
  page.backend = runtime.backend;
  page.threads = threads;
  showStatus('loading models…');
  const template = $('#model-card');
  for (const entry of site.models) {
    const card = template.content.firstElementChild.cloneNode(true);
    $('#models').append(card);
    page.models.push(await loadModel(runtime, entry, card));
  }
  wireInputs(runtime, site);
  page.loaded = true;
  if (!page.models.some((m) => m.session)) {
    showStatus('no model could be loaded');
    return;
  }
  if (site.samples.length) await mattePhoto(runtime, await (await fetch(site.samples[0])).blob());
  else showStatus();
}

main().catch((error) => {
  page.error = error.message ?? String(error);
  $('#status').textContent = `error: ${page.error}`;
});
