import Testing
@testable import OneTunCore

private func ip(_ text: String) -> IPAddress { IPAddress(text)! }
private func prefix(_ text: String) -> IPPrefix { IPPrefix(text)! }

@Suite struct IPPrefixTests {
    @Test func parseAndPrint() {
        #expect(prefix("10.0.0.0/8").description == "10.0.0.0/8")
        #expect(prefix("10.0.0.0/8").address == ip("10.0.0.0"))
        #expect(prefix("10.0.0.0/8").length == 8)
        #expect(prefix("fd00::/64").description == "fd00::/64")
        #expect(prefix("0.0.0.0/0").description == "0.0.0.0/0")
        #expect(prefix("::/0").description == "::/0")
        // A bare address is one host, as wg reads an allowed IP without a length.
        #expect(prefix("192.168.4.2") == IPPrefix(address: ip("192.168.4.2"), length: 32))
        #expect(prefix("fd00::2").description == "fd00::2/128")
        #expect(IPPrefix(host: ip("fd00::2")) == prefix("fd00::2/128"))
        // IPv6 text in any of its forms; printed canonically (RFC 5952).
        #expect(prefix("FD00:0:0:0:0:0:0:0/8").description == "fd00::/8")
        #expect(prefix("::ffff:10.0.0.0/104").description == "::ffff:10.0.0.0/104")
    }

    /// Host bits are cleared, as the kernel and wireguard-go store an allowed IP: two spellings of one
    /// network are equal and print the same.
    @Test func normalisation() {
        #expect(prefix("10.1.2.3/8") == prefix("10.0.0.0/8"))
        #expect(prefix("10.1.2.3/8").description == "10.0.0.0/8")
        #expect(prefix("10.1.2.3/31").description == "10.1.2.2/31")
        #expect(prefix("255.255.255.255/0").description == "0.0.0.0/0")
        #expect(prefix("fd00:1:2:3:4:5:6:7/64").description == "fd00:1:2:3::/64")
        #expect(prefix("fd00:1:2:3:4:5:6:7/65").description == "fd00:1:2:3::/65")
        #expect(prefix("fd00:1:2:3:ffff:5:6:7/65").description == "fd00:1:2:3:8000::/65")
        #expect(prefix("fd00:1:2:3:4:5:6:7/127").description == "fd00:1:2:3:4:5:6:6/127")
        #expect(prefix("ffff::1/0").description == "::/0")
        #expect(prefix("fd00::1/128").description == "fd00::1/128")
        #expect(IPPrefix.parse("10.1.2.3/8")?.hostBitsCleared == true)
        #expect(IPPrefix.parse("10.0.0.0/8")?.hostBitsCleared == false)
        #expect(IPPrefix.parse("10.0.0.1")?.hostBitsCleared == false)
    }

    @Test func rejects() {
        for bad in [
            "", "/", "/8", "10.0.0.0/", "10.0.0.0/33", "fd00::/129", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/08",
            "10.0.0.0/8/8", "10.0.0.0 /8", "10.0.0.0/ 8", " 10.0.0.0/8", "10.0.0/8", "[fd00::]/64", "fd00::/0064",
            "10.0.0.0/1000", "host/8", "10.0.0.0/8x", "fe80::1%eth0/64",
        ] {
            #expect(IPPrefix(bad) == nil, "\(bad)")
        }
    }

    @Test func containsIPv4() {
        let net = prefix("10.1.0.0/16")
        #expect(net.contains(ip("10.1.0.0")))
        #expect(net.contains(ip("10.1.255.255")))
        #expect(net.contains(ip("10.1.2.3")))
        #expect(!net.contains(ip("10.2.0.0")))
        #expect(!net.contains(ip("10.0.255.255")))
        #expect(!net.contains(ip("11.1.0.0")))
        // /0 holds every IPv4 address and no IPv6 one.
        let all = prefix("0.0.0.0/0")
        for text in ["0.0.0.0", "1.2.3.4", "255.255.255.255"] { #expect(all.contains(ip(text)), "\(text)") }
        #expect(!all.contains(ip("::")))
        #expect(!all.contains(ip("::ffff:1.2.3.4")))
        // /32 holds exactly its address.
        let host = prefix("192.168.4.2/32")
        #expect(host.contains(ip("192.168.4.2")))
        #expect(!host.contains(ip("192.168.4.3")))
        #expect(!host.contains(ip("192.168.4.1")))
        // /31 and /1: the edges of the shifts.
        #expect(prefix("10.0.0.2/31").contains(ip("10.0.0.3")))
        #expect(!prefix("10.0.0.2/31").contains(ip("10.0.0.4")))
        #expect(prefix("128.0.0.0/1").contains(ip("255.1.1.1")))
        #expect(!prefix("128.0.0.0/1").contains(ip("127.255.255.255")))
    }

    @Test func containsIPv6() {
        let net = prefix("fd00:1::/32")
        #expect(net.contains(ip("fd00:1::")))
        #expect(net.contains(ip("fd00:1:ffff:ffff:ffff:ffff:ffff:ffff")))
        #expect(!net.contains(ip("fd00:2::")))
        #expect(!net.contains(ip("10.0.0.1")))
        let all = prefix("::/0")
        for text in ["::", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:10.0.0.1"] {
            #expect(all.contains(ip(text)), "\(text)")
        }
        #expect(!all.contains(ip("10.0.0.1")))  // IPv4 is never inside an IPv6 network, /0 included
        let host = prefix("fd00::2/128")
        #expect(host.contains(ip("fd00::2")))
        #expect(!host.contains(ip("fd00::3")))
        #expect(!host.contains(ip("fd01::2")))
        // Across the halves: /64 looks only at the high half, /65 and /127 at the low one too.
        #expect(prefix("fd00::/64").contains(ip("fd00::ffff:ffff:ffff:ffff")))
        #expect(!prefix("fd00::/64").contains(ip("fd00:0:0:1::")))
        #expect(prefix("fd00::/65").contains(ip("fd00::7fff:ffff:ffff:ffff")))
        #expect(!prefix("fd00::/65").contains(ip("fd00::8000:0:0:0")))
        #expect(prefix("fd00::2/127").contains(ip("fd00::3")))
        #expect(!prefix("fd00::2/127").contains(ip("fd00::4")))
        #expect(prefix("8000::/1").contains(ip("ffff::")))
        #expect(!prefix("8000::/1").contains(ip("7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")))
    }

    @Test func containsPrefix() {
        #expect(prefix("10.0.0.0/8").contains(prefix("10.1.0.0/16")))
        #expect(prefix("10.0.0.0/8").contains(prefix("10.0.0.0/8")))
        #expect(!prefix("10.1.0.0/16").contains(prefix("10.0.0.0/8")))
        #expect(!prefix("10.0.0.0/8").contains(prefix("11.0.0.0/16")))
        #expect(prefix("::/0").contains(prefix("fd00::/8")))
        #expect(!prefix("::/0").contains(prefix("0.0.0.0/0")))
    }

    /// Every length of both families against a bit-by-bit model.
    @Test func containsMatchesBitModel() {
        let v4 = ip("203.0.113.77"), v6 = ip("2001:db8:85a3:8d3:1319:8a2e:370:7348")
        func bit(_ address: IPAddress, _ index: Int) -> Bool {
            switch address {
            case .v4(let a): a.rawValue >> (31 - index) & 1 == 1
            case .v6(let a): (index < 64 ? a.high >> (63 - index) : a.low >> (127 - index)) & 1 == 1
            }
        }
        func flipped(_ address: IPAddress, _ index: Int) -> IPAddress {
            switch address {
            case .v4(let a): .v4(IPv4Address(rawValue: a.rawValue ^ (1 << (31 - index))))
            case .v6(let a):
                index < 64
                    ? .v6(IPv6Address(high: a.high ^ (1 << (63 - index)), low: a.low))
                    : .v6(IPv6Address(high: a.high, low: a.low ^ (1 << (127 - index))))
            }
        }
        for (address, width) in [(v4, 32), (v6, 128)] {
            for length in 0...width {
                let net = IPPrefix(address: address, length: length)
                #expect(net.contains(address))
                for index in 0..<width {
                    // Flipping a bit inside the length leaves the network; one past it does not.
                    #expect(net.contains(flipped(address, index)) == (index >= length), "/\(length) bit \(index)")
                    #expect(bit(net.address, index) == (index < length && bit(address, index)))
                }
            }
        }
    }
}
