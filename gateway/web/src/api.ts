// The console's only way to Slipway: grpc-web to the gateway that served the page
// (same origin, so no CORS and `connect-src 'self'` holds), with clients generated
// from the repo's .proto files (src/gen, by protoc-gen-es). The bearer token of the
// session goes on every call; a refusal that means the session is over
// (UNAUTHENTICATED) ends the session with the server's reason.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "./gen/slipway/auth/v1/auth_pb.js";
import { DeployService } from "./gen/slipway/deploy/v1/deploy_pb.js";
import { RegistryService } from "./gen/slipway/registry/v1/registry_pb.js";
import { session } from "./session.js";

const bearer: Interceptor = (next) => async (req) => {
  const token = session.token();
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const auth = createClient(AuthService, transport);
export const registry = createClient(RegistryService, transport);
export const deploy = createClient(DeployService, transport);

/** A short text for an error; UNAUTHENTICATED ends the session (back to login). */
export function explain(err: unknown): string {
  const e = ConnectError.from(err);
  if (e.code === Code.Unauthenticated && session.token()) {
    session.end(`Your session ended: ${e.rawMessage || "token refused"}.`);
  }
  return e.rawMessage || e.message;
}

/** Whether an error is the end of a stream that may be opened again (not a refusal). */
export function retriable(err: unknown): boolean {
  const e = ConnectError.from(err);
  return ![Code.Unauthenticated, Code.PermissionDenied, Code.InvalidArgument, Code.NotFound, Code.Canceled].includes(
    e.code,
  );
}

/** Whether the abort of a stream was ours (the page left it). */
export function aborted(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Canceled;
}
