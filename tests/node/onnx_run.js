// Runs an ONNX file in ONNX Runtime (onnxruntime-node, installed by scripts/onnx_deps.sh into
// third_party/onnxruntime-node/; run with NODE_PATH=<that>/node_modules). Used by
// tests/models/test_python_export.cpp:
//
//   node onnx_run.js MODEL INPUT OUTPUT SHAPE      e.g. SHAPE 1x4x32x32x32
//
// INPUT holds the "image" tensor as raw little-endian float32 of SHAPE; OUTPUT receives "logits"
// the same way. Prints the output shape.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, input, output, shapeText] = process.argv.slice(2);
  if (!shapeText) throw new Error('usage: node onnx_run.js MODEL INPUT OUTPUT SHAPE (e.g. 1x4x32x32x32)');
  const shape = shapeText.split('x').map(Number);
  const bytes = fs.readFileSync(input);
  const n = shape.reduce((a, b) => a * b, 1);
  if (bytes.length !== 4 * n) throw new Error(`${input}: ${bytes.length} bytes, SHAPE ${shapeText} needs ${4 * n}`);
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  const session = await ort.InferenceSession.create(model);
  const result = await session.run({image: new ort.Tensor('float32', data, shape)});
  const logits = result.logits;
  fs.writeFileSync(output, Buffer.from(logits.data.buffer, logits.data.byteOffset, logits.data.byteLength));
  console.log(`onnx_run: ${model}: image ${shapeText} -> logits ${logits.dims.join('x')}`);
}

main().catch((e) => {
  console.error(`onnx_run: error: ${e.message || e}`);
  process.exit(1);
});
