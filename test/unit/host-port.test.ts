import { describe, expect, test } from "bun:test";
import { AddressError, formatHostPort, grpcTarget, isHostPort, parseHostPort, sameAddress, socketAddress } from "../../src/net/host-port.ts";

function refusal(input: string, what = "--grpc-addr"): string {
  try {
    parseHostPort(input, what);
  } catch (err) {
    expect(err).toBeInstanceOf(AddressError);
    return (err as Error).message;
  }
  throw new Error(`${JSON.stringify(input)} was accepted`);
}

describe("parseHostPort", () => {
  test("names and IPv4 addresses", () => {
    expect(parseHostPort("localhost:9501")).toEqual({ host: "localhost", port: 9501, ipv6: false });
    expect(parseHostPort("127.0.0.1:1")).toEqual({ host: "127.0.0.1", port: 1, ipv6: false });
    expect(parseHostPort("0.0.0.0:65535")).toEqual({ host: "0.0.0.0", port: 65535, ipv6: false });
    expect(parseHostPort("node-1.rbkv.svc.cluster.local:9601").host).toBe("node-1.rbkv.svc.cluster.local");
    expect(parseHostPort("rbkv_node_2:9601").host).toBe("rbkv_node_2");
  });

  test("IPv6 in brackets: the host comes back without them", () => {
    expect(parseHostPort("[::1]:39971")).toEqual({ host: "::1", port: 39971, ipv6: true });
    expect(parseHostPort("[::]:9501")).toEqual({ host: "::", port: 9501, ipv6: true });
    expect(parseHostPort("[2001:db8::7]:80").host).toBe("2001:db8::7");
    expect(parseHostPort("[::ffff:10.0.0.1]:80").host).toBe("::ffff:10.0.0.1");
    expect(parseHostPort("[fe80::1%eth0]:80").host).toBe("fe80::1%eth0");
  });

  test("garbage is refused with a message naming the flag and the input", () => {
    expect(refusal("nowhere")).toBe('--grpc-addr must be host:port or [ipv6]:port, got "nowhere": the port is missing');
    expect(refusal("::1:9501")).toContain("an IPv6 address needs brackets: [::1]:9501");
    expect(refusal("a:b:c")).toContain("more than one colon");
    expect(refusal(":9501")).toContain("the host is missing");
    expect(refusal("host:")).toContain("the port is missing");
    expect(refusal("host:0")).toContain("the port 0 is not between 1 and 65535");
    expect(refusal("host:65536")).toContain("not between 1 and 65535");
    expect(refusal("host:12x")).toContain('the port "12x" is not a number');
    expect(refusal("host:+1")).toContain("is not a number");
    expect(refusal("host:123456")).toContain("is not a number");
    expect(refusal("[::1]")).toContain("the port is missing");
    expect(refusal("[::1]9501")).toContain("followed by :port");
    expect(refusal("[::1:9501")).toContain("no closing bracket");
    expect(refusal("[localhost]:9501")).toContain("is not an IPv6 address");
    expect(refusal("[127.0.0.1]:9501")).toContain("is not an IPv6 address");
    expect(refusal("ho st:1")).toContain("white space");
    expect(refusal("")).toContain("it is empty");
    expect(refusal("bad/host:1")).toContain("is not a host name or an IP address");
    expect(refusal("-x:1")).toContain("is not a host name");
    expect(refusal("http://x:1")).toContain("more than one colon");
    expect(refusal("x", "the raft_addr of MemberAdd").startsWith("the raft_addr of MemberAdd must be")).toBe(true);
  });

  test("isHostPort answers without throwing", () => {
    expect(isHostPort("[::1]:1")).toBe(true);
    expect(isHostPort("x")).toBe(false);
    expect(isHostPort("")).toBe(false);
  });
});

describe("formatting", () => {
  test("gRPC targets keep the brackets of an IPv6 address, sockets get the bare host", () => {
    expect(grpcTarget("[::1]:39971")).toBe("[::1]:39971");
    expect(grpcTarget("localhost:9501")).toBe("localhost:9501");
    expect(socketAddress("[::1]:39972")).toEqual({ host: "::1", port: 39972 });
    expect(socketAddress("127.0.0.1:9601")).toEqual({ host: "127.0.0.1", port: 9601 });
    expect(formatHostPort({ host: "::1", port: 5 })).toBe("[::1]:5");
    expect(formatHostPort({ host: "10.1.2.3", port: 5 })).toBe("10.1.2.3:5");
  });

  test("format and parse are inverses", () => {
    for (const a of ["[::1]:1", "[2001:db8::7]:65535", "a.b:9", "1.2.3.4:80"]) expect(formatHostPort(parseHostPort(a))).toBe(a);
  });
});

describe("sameAddress", () => {
  test("case and IPv6 spelling do not matter", () => {
    expect(sameAddress("[::1]:9501", "[0:0:0:0:0:0:0:1]:9501")).toBe(true);
    expect(sameAddress("[2001:DB8::7]:1", "[2001:db8:0::7]:1")).toBe(true);
    expect(sameAddress("[::ffff:10.0.0.1]:1", "[::ffff:a00:1]:1")).toBe(true);
    expect(sameAddress("LocalHost:1", "localhost:1")).toBe(true);
    expect(sameAddress("host.:1", "host:1")).toBe(true);
  });

  test("different hosts or ports differ; names are not resolved", () => {
    expect(sameAddress("[::1]:9501", "[::1]:9502")).toBe(false);
    expect(sameAddress("[::1]:9501", "[::2]:9501")).toBe(false);
    expect(sameAddress("localhost:9501", "127.0.0.1:9501")).toBe(false);
    expect(sameAddress("[::1]:1", "127.0.0.1:1")).toBe(false);
  });

  test("an address that does not parse equals only itself", () => {
    expect(sameAddress("garbage", "garbage")).toBe(true);
    expect(sameAddress("garbage", "garbage:1")).toBe(false);
  });
});
