// The one host:port parser of the program: flags, peer addresses from the log, Join and
// MemberAdd/MemberUpdate requests, gRPC dialling and socket listening all go through here.
//
// Written forms: "host:port" (a name or an IPv4 address) and "[v6]:port" (an IPv6 address, in
// brackets as in URLs, RFC 3986 §3.2.2). A bare IPv6 address with a port ("::1:9501") is refused:
// which colon starts the port cannot be told. Two consumers want different shapes of the same
// address: gRPC targets keep the brackets ("[::1]:9501"), sockets (Bun.listen, Bun.connect,
// net.Server.listen) take the host without them ("::1") and the port apart.

import { isIPv4, isIPv6 } from "node:net";

/** An address that is not host:port. `what` names where it came from (a flag, a request field). */
export class AddressError extends Error {
  constructor(
    readonly input: string,
    readonly what: string,
    readonly reason: string,
  ) {
    super(`${what} must be host:port or [ipv6]:port, got ${JSON.stringify(input)}: ${reason}`);
    this.name = "AddressError";
  }
}

export interface HostPort {
  /** Without brackets: "::1", "127.0.0.1", "node-1.example". */
  readonly host: string;
  readonly port: number;
  readonly ipv6: boolean;
}

// RFC 1123 host names: labels of letters, digits and inner hyphens, dot-separated. Underscores
// too, as container and service names often carry them and resolvers accept them.
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

function parsePort(text: string, input: string, what: string): number {
  if (text === "") throw new AddressError(input, what, "the port is missing");
  if (!/^\d{1,5}$/.test(text)) throw new AddressError(input, what, `the port ${JSON.stringify(text)} is not a number`);
  const port = Number(text);
  if (port < 1 || port > 65535) throw new AddressError(input, what, `the port ${port} is not between 1 and 65535`);
  return port;
}

/** Parses "host:port" or "[v6]:port"; throws AddressError naming `what` otherwise. */
export function parseHostPort(input: string, what = "the address"): HostPort {
  if (input === "") throw new AddressError(input, what, "it is empty");
  if (/\s/.test(input)) throw new AddressError(input, what, "it contains white space");
  if (input.startsWith("[")) {
    const close = input.indexOf("]");
    if (close < 0) throw new AddressError(input, what, "the IPv6 address has no closing bracket");
    const host = input.slice(1, close);
    if (!isIPv6(host)) throw new AddressError(input, what, `${JSON.stringify(host)} in brackets is not an IPv6 address`);
    if (input[close + 1] !== ":") throw new AddressError(input, what, close + 1 === input.length ? "the port is missing" : "the bracketed address must be followed by :port");
    return { host, port: parsePort(input.slice(close + 2), input, what), ipv6: true };
  }
  const colon = input.lastIndexOf(":");
  if (colon < 0) throw new AddressError(input, what, "the port is missing");
  const host = input.slice(0, colon);
  if (host.includes(":")) {
    throw new AddressError(input, what, isIPv6(host) ? `an IPv6 address needs brackets: [${host}]:${input.slice(colon + 1)}` : "it has more than one colon");
  }
  if (host === "") throw new AddressError(input, what, "the host is missing");
  if (!isIPv4(host) && !HOST_NAME.test(host)) throw new AddressError(input, what, `${JSON.stringify(host)} is not a host name or an IP address`);
  return { host, port: parsePort(input.slice(colon + 1), input, what), ipv6: false };
}

/** The written form: brackets around an IPv6 host. What gRPC dials and what logs show. */
export function formatHostPort(hp: { host: string; port: number }): string {
  return isIPv6(hp.host) ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** A gRPC target for `addr` (grpc-js wants the brackets of an IPv6 address kept). */
export function grpcTarget(addr: string, what = "the gRPC address"): string {
  return formatHostPort(parseHostPort(addr, what));
}

/** The host (no brackets) and port to listen on or connect to with a socket API. */
export function socketAddress(addr: string, what = "the address"): { host: string; port: number } {
  const { host, port } = parseHostPort(addr, what);
  return { host, port };
}

/** True if `addr` is a valid host:port (for request validation that reports its own error). */
export function isHostPort(addr: string): boolean {
  try {
    parseHostPort(addr);
    return true;
  } catch (err) {
    if (err instanceof AddressError) return false;
    throw err;
  }
}

/** The 8 groups of an IPv6 address, so that "::1" and "0:0::1" compare equal. */
function expandIPv6(host: string): string {
  const zone = host.indexOf("%");
  const bare = zone < 0 ? host : host.slice(0, zone);
  const suffix = zone < 0 ? "" : host.slice(zone);
  let groups: string[];
  // An embedded IPv4 tail ("::ffff:10.0.0.1") is two groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(bare);
  let text = bare;
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${bare.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length === 2) {
    const head = halves[0] === "" ? [] : halves[0]!.split(":");
    const tail = halves[1] === "" ? [] : halves[1]!.split(":");
    groups = [...head, ...Array<string>(8 - head.length - tail.length).fill("0"), ...tail];
  } else groups = text.split(":");
  return groups.map((g) => Number.parseInt(g, 16).toString(16)).join(":") + suffix.toLowerCase();
}

function canonicalHost(hp: HostPort): string {
  return hp.ipv6 ? expandIPv6(hp.host) : hp.host.toLowerCase().replace(/\.$/, "");
}

/**
 * Whether two addresses name the same host and port as written: case and IPv6 spelling do not
 * matter, names are not resolved ("localhost" is not "127.0.0.1": the other members dial the
 * string). An address that does not parse equals only the same string.
 */
export function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  let x: HostPort;
  let y: HostPort;
  try {
    x = parseHostPort(a);
    y = parseHostPort(b);
  } catch (err) {
    if (err instanceof AddressError) return false;
    throw err;
  }
  return x.port === y.port && canonicalHost(x) === canonicalHost(y);
}
