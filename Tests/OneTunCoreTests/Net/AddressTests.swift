import Testing
@_spi(OneTunInternals) @testable import OneTunCore

@Suite struct NetAddressTests {
    @Test func ipv4ParseAndPrint() {
        #expect(IPv4Address("1.2.3.4") == IPv4Address(1, 2, 3, 4))
        #expect(IPv4Address("1.2.3.4")?.rawValue == 0x0102_0304)
        #expect(IPv4Address("0.0.0.0") == .unspecified)
        #expect(IPv4Address("255.255.255.255") == .broadcast)
        #expect(IPv4Address(10, 0, 0, 254).description == "10.0.0.254")
        #expect(IPv4Address("127.0.0.1")!.isLoopback)
        #expect(IPv4Address("224.0.0.251")!.isMulticast)
        for bad in [
            "", "1", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "1.2.3.-4", "01.2.3.4", "1.2.3.04",
            "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4444", "a.b.c.d", "1.2.3.4/24",
            "１.2.3.4", "::1", "0x1.2.3.4", "9999999999.1.1.1",
        ] {
            #expect(IPv4Address(bad) == nil, "\(bad)")
        }
    }

    /// RFC 5952 §4 examples and a few edges.
    @Test func ipv6CanonicalText() {
        let cases: [(String, String)] = [
            ("2001:db8:0:0:0:0:2:1", "2001:db8::2:1"),
            ("2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"),
            ("2001:db8::0:1", "2001:db8::1"),  // §4.1 leading zeros
            ("2001:db8::1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // §4.2.2 one zero group stays
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // §4.2.3 first of equal runs
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),  // §4.2.3 longest run
            ("2001:DB8::AbCd", "2001:db8::abcd"),  // §4.3 lower case
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("0:0:0:0:0:0:0:0", "::"),
            ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
            ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
            ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
            ("fe80::1", "fe80::1"),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),  // §5 mapped
            ("::ffff:c000:0201", "::ffff:192.0.2.1"),
            ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
            ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
            ("::1.2.3.4", "::102:304"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ]
        for (input, canonical) in cases {
            let parsed = IPv6Address(input)
            #expect(parsed?.description == canonical, "\(input)")
            #expect(parsed.flatMap { IPv6Address($0.description) } == parsed, "\(input) re-parses")
        }
        #expect(IPv6Address("2001:db8::1")! == IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
        #expect(IPv6Address("fe80::1")!.isLinkLocal)
        #expect(IPv6Address("ff02::1")!.isMulticast)
        #expect(IPv6Address("fd00::1")!.isUniqueLocal)
        #expect(IPv6Address(ipv4Mapped: IPv4Address(10, 1, 2, 3)).ipv4Mapped == IPv4Address(10, 1, 2, 3))
    }

    @Test func ipv6Rejects() {
        for bad in [
            "", ":", ":::", "1::2::3", "::1::", ":1::", "1::2:", "1:2", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "12345::", "g::", "::g", "1:::2", "fe80::1%eth0", "[::1]",
            " ::1", "::1 ", "::1.2.3", "::1.2.3.4.5", "::256.1.1.1", "1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4",
            "1:2:3:4:5:6::1.2.3.4", "::1.2.3.4:1", "1.2.3.4::", "::01.2.3.4", ":1", "1:", "-1::", "::+1",
        ] {
            #expect(IPv6Address(bad) == nil, "\(bad)")
        }
    }

    @Test func ipAddressEnum() {
        #expect(IPAddress("10.0.0.1") == .v4(IPv4Address(10, 0, 0, 1)))
        #expect(IPAddress("::1") == .v6(.loopback))
        #expect(IPAddress("1.2.3") == nil)
        #expect(IPAddress("[::1]") == nil)
        #expect(IPAddress("fd00::2")!.description == "fd00::2")
        #expect(IPAddress("9.9.9.9")! < IPAddress("::")!)
    }

    /// Random strings from the characters addresses are made of: never a trap, and whatever parses
    /// prints to text that parses back to it.
    @Test func parsersNeverCrash() {
        let alphabet = Array("0123456789abcdefABCDEFg:.%[]/ -x".utf8)
        var rng = NetTestRNG(seed: 7)
        for _ in 0..<30_000 {
            let length = Int.random(in: 0...45, using: &rng)
            let text = String(decoding: (0..<length).map { _ in alphabet.randomElement(using: &rng)! }, as: UTF8.self)
            if let a = IPv4Address(text) { #expect(IPv4Address(a.description) == a) }
            if let a = IPv6Address(text) { #expect(IPv6Address(a.description) == a, "\(text)") }
            if let a = IPAddress(text) { #expect(IPAddress(a.description) == a) }
        }
        // Structured near-misses: groups and separators.
        let parts = ["", "0", "1", "ffff", "12345", ":", "::", ".", "1.2.3.4", "255", "256"]
        for _ in 0..<30_000 {
            let text = (0..<Int.random(in: 0...10, using: &rng)).map { _ in parts.randomElement(using: &rng)! }.joined()
            if let a = IPv6Address(text) { #expect(IPv6Address(a.description) == a, "\(text)") }
            if let a = IPv4Address(text) { #expect(IPv4Address(a.description) == a) }
        }
    }
}
