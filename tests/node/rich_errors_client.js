// A non-Python client of compute.v1 that reads the standard error details:
// it holds its one allowed job (the server runs with --max-jobs-per-caller 1),
// submits a second, and decodes the google.rpc.Status that the refusal
// carries in its grpc-status-details-bin trailer with protobufjs (the
// google/rpc protos beside this file come from googleapis-common-protos).
// Prints the refusal as JSON: code, message, and each detail by type.
//
// Usage: node rich_errors_client.js HOST:PORT
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const [target] = process.argv.slice(2);
const definition = protoLoader.loadSync(
  path.join(__dirname, "..", "..", "protos", "compute", "v1", "compute.proto"),
  { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true },
);
const compute = grpc.loadPackageDefinition(definition).compute.v1;
const client = new compute.ComputeService(target, grpc.credentials.createInsecure());

const rpc = new protobuf.Root();
rpc.resolvePath = (origin, target) =>
  target.startsWith("google/protobuf/") ? target : path.join(__dirname, target);
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpc.lookupType("google.rpc.Status");

function decodeDetails(metadata) {
  const [packed] = metadata.get("grpc-status-details-bin");
  if (!packed) return null;
  const status = Status.toObject(Status.decode(packed), { longs: Number, defaults: true });
  const details = {};
  for (const any of status.details) {
    const name = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    const type = rpc.lookupType(name);
    details[name] = type.toObject(type.decode(any.value), { longs: Number, defaults: true });
  }
  return { code: status.code, message: status.message, details };
}

function submit(seconds) {
  const request = { job: { call: { function: "sleep", args: { values: [{ numberValue: seconds }] } } } };
  return new Promise((resolve, reject) => {
    client.SubmitJob(request, { deadline: new Date(Date.now() + 30000) }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

(async () => {
  const held = await submit(3);
  try {
    await submit(0);
  } catch (err) {
    const status = decodeDetails(err.metadata);
    console.log(JSON.stringify({ held: held.job.job_id, grpc_code: err.code, status }));
    process.exit(0);
  }
  console.error("the second job was accepted: the limit did not refuse it");
  process.exit(3);
})().catch((err) => {
  console.error(`${err.code} ${err.details}`);
  process.exit(2);
});
