// A non-Python client of compute.v1: runs a named function that returns a
// table, asks for the result as Arrow, reads it with apache-arrow, and prints
// the rows as JSON. Large results are read with GetJobResult.
//
// Usage: node arrow_client.js HOST:PORT FUNCTION [KWARGS_JSON]
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const { tableFromIPC } = require("apache-arrow");

const [target, fn, kwargs = "{}"] = process.argv.slice(2);
const definition = protoLoader.loadSync(
  path.join(__dirname, "..", "..", "protos", "compute", "v1", "compute.proto"),
  { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true },
);
const compute = grpc.loadPackageDefinition(definition).compute.v1;
const client = new compute.ComputeService(target, grpc.credentials.createInsecure());

// protobufjs names the fields of google.protobuf's well-known types in
// camelCase even with keepCase (their descriptors come bundled).
function toStruct(obj) {
  const fields = {};
  for (const [key, value] of Object.entries(obj)) {
    if (typeof value === "number") fields[key] = { numberValue: value };
    else if (typeof value === "boolean") fields[key] = { boolValue: value };
    else fields[key] = { stringValue: String(value) };
  }
  return { fields };
}

function readStream(jobId) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const call = client.GetJobResult({ job_id: jobId, result_format: "RESULT_FORMAT_ARROW" });
    call.on("data", (message) => { if (message.chunk) chunks.push(message.chunk); });
    call.on("error", reject);
    call.on("end", () => resolve(Buffer.concat(chunks)));
  });
}

const request = {
  job: {
    call: { function: fn, kwargs: toStruct(JSON.parse(kwargs)) },
    result_format: "RESULT_FORMAT_ARROW",
  },
};
const deadline = new Date(Date.now() + 60000);
client.Run(request, { deadline }, async (err, response) => {
  if (err) {
    console.error(`${err.code} ${err.details}`);
    process.exit(2);
  }
  if (response.job.state !== "JOB_STATE_SUCCEEDED") {
    console.error(`job ${response.job.state}: ${JSON.stringify(response.job.error)}`);
    process.exit(3);
  }
  const bytes = response.result.streamed ? await readStream(response.job.job_id) : response.result.arrow;
  const table = tableFromIPC(bytes);
  const rows = table.toArray().map((row) => row.toJSON());
  console.log(JSON.stringify({
    format: response.result.format,
    streamed: response.result.streamed,
    columns: table.schema.fields.map((f) => f.name),
    rows,
  }));
  client.close();
});
