import Testing
@_spi(OneTunInternals) @testable import OneTunCore

private func ip(_ text: String) -> ForwardHost { .address(IPAddress(text)!) }
private let loopback = ip("127.0.0.1")
private let peer = IPAddress("192.168.4.3")!

private func spec(
    _ source: ForwardHost, _ sourcePort: UInt16, _ destination: ForwardHost, _ destinationPort: UInt16,
    _ proto: ForwardProtocol = .tcp, remote: Bool = false
) -> PortForwardSpec {
    PortForwardSpec(
        source: source, sourcePort: sourcePort, destination: destination, destinationPort: destinationPort,
        proto: proto, remote: remote)
}

@Suite struct PortForwardSpecTests {
    /// The eight samples in onetun's `from_notation` doc comment and tests (src/config.rs), which are also the
    /// examples of its `--help`. onetun resolves "localhost" there; we keep names for the CLI to resolve.
    @Test(arguments: [
        ("192.168.0.1:8080:192.168.4.1:8081:TCP,UDP",
         [spec(ip("192.168.0.1"), 8080, ip("192.168.4.1"), 8081, .tcp),
          spec(ip("192.168.0.1"), 8080, ip("192.168.4.1"), 8081, .udp)]),
        ("127.0.0.1:8080:192.168.4.1:8081:TCP,UDP",
         [spec(loopback, 8080, ip("192.168.4.1"), 8081, .tcp), spec(loopback, 8080, ip("192.168.4.1"), 8081, .udp)]),
        ("192.168.0.1:8080:192.168.4.1:8081:TCP", [spec(ip("192.168.0.1"), 8080, ip("192.168.4.1"), 8081)]),
        ("127.0.0.1:8080:192.168.4.1:8081:TCP", [spec(loopback, 8080, ip("192.168.4.1"), 8081)]),
        ("0.0.0.0:8080:192.168.4.1:8081", [spec(ip("0.0.0.0"), 8080, ip("192.168.4.1"), 8081)]),
        ("[::1]:8080:192.168.4.1:8081", [spec(ip("::1"), 8080, ip("192.168.4.1"), 8081)]),
        ("8080:192.168.4.1:8081", [spec(loopback, 8080, ip("192.168.4.1"), 8081)]),
        ("8080:192.168.4.1:8081:TCP", [spec(loopback, 8080, ip("192.168.4.1"), 8081)]),
        ("localhost:8080:192.168.4.1:8081", [spec(.name("localhost"), 8080, ip("192.168.4.1"), 8081)]),
        ("localhost:8080:192.168.4.1:8081:TCP", [spec(.name("localhost"), 8080, ip("192.168.4.1"), 8081)]),
        ("localhost:8080:localhost:8081:TCP", [spec(.name("localhost"), 8080, .name("localhost"), 8081)]),
        ("localhost:8080:peer.intranet:8081:TCP", [spec(.name("localhost"), 8080, .name("peer.intranet"), 8081)]),
    ])
    func onetunSamples(notation: String, expected: [PortForwardSpec]) throws {
        #expect(try PortForwardSpec.parse(notation) == expected)
    }

    /// Every port forward in onetun's README.
    @Test(arguments: [
        ("127.0.0.1:8080:192.168.4.2:8080", [spec(loopback, 8080, ip("192.168.4.2"), 8080)]),
        ("127.0.0.1:8081:192.168.4.4:8081", [spec(loopback, 8081, ip("192.168.4.4"), 8081)]),
        ("0.0.0.0:8080:192.168.4.2:8080", [spec(ip("0.0.0.0"), 8080, ip("192.168.4.2"), 8080)]),
        ("127.0.0.1:8080:192.168.4.2:8080:UDP", [spec(loopback, 8080, ip("192.168.4.2"), 8080, .udp)]),
        // "UDP,TCP" opens both, in the order written (the README's log shows UDP first).
        ("127.0.0.1:8080:192.168.4.2:8080:UDP,TCP",
         [spec(loopback, 8080, ip("192.168.4.2"), 8080, .udp), spec(loopback, 8080, ip("192.168.4.2"), 8080, .tcp)]),
        ("[::1]:8080:192.168.4.2:8080", [spec(ip("::1"), 8080, ip("192.168.4.2"), 8080)]),
        ("127.0.0.1:1080:192.168.4.2:1080", [spec(loopback, 1080, ip("192.168.4.2"), 1080)]),
    ])
    func readmeExamples(notation: String, expected: [PortForwardSpec]) throws {
        #expect(try PortForwardSpec.parse(notation) == expected)
    }

    /// The `--remote` examples of onetun's help: the source is always the peer's own virtual address.
    @Test func remoteExamples() throws {
        #expect(try PortForwardSpec.parseRemote("8080:localhost:8081:TCP,UDP", sourcePeerIP: peer) == [
            spec(.address(peer), 8080, .name("localhost"), 8081, .tcp, remote: true),
            spec(.address(peer), 8080, .name("localhost"), 8081, .udp, remote: true),
        ])
        #expect(try PortForwardSpec.parseRemote("8080:[::1]:8081:TCP", sourcePeerIP: peer) == [
            spec(.address(peer), 8080, ip("::1"), 8081, remote: true)
        ])
        #expect(try PortForwardSpec.parseRemote("8080:google.com:80", sourcePeerIP: peer) == [
            spec(.address(peer), 8080, .name("google.com"), 80, remote: true)
        ])
    }

    @Test func remoteSourceMustBeThePeer() throws {
        #expect(try PortForwardSpec.parseRemote("192.168.4.3:8080:127.0.0.1:80", sourcePeerIP: peer) == [
            spec(.address(peer), 8080, loopback, 80, remote: true)
        ])
        #expect(try PortForwardSpec.parseRemote("[fd00::3]:53:[::1]:53:udp", sourcePeerIP: IPAddress("fd00::3")!)
            == [spec(ip("fd00::3"), 53, ip("::1"), 53, .udp, remote: true)])
        let cases: [(String, String)] = [
            ("127.0.0.1:8080:127.0.0.1:80",
             #"remote port forward "127.0.0.1:8080:127.0.0.1:80": src_host 127.0.0.1 must be the source peer IP 192.168.4.3, or be omitted"#),
            ("myhost:8080:127.0.0.1:80",
             #"remote port forward "myhost:8080:127.0.0.1:80": src_host myhost must be the source peer IP 192.168.4.3, or be omitted"#),
            ("[::ffff:192.168.4.3]:8080:127.0.0.1:80",
             #"remote port forward "[::ffff:192.168.4.3]:8080:127.0.0.1:80": src_host [::ffff:192.168.4.3] must be the source peer IP 192.168.4.3, or be omitted"#),
        ]
        for (notation, message) in cases {
            do {
                let specs = try PortForwardSpec.parseRemote(notation, sourcePeerIP: peer)
                Issue.record("\(notation) parsed as \(specs)")
            } catch {
                #expect(error.description == message)
            }
        }
        // The same notations are fine as local forwards.
        #expect(try PortForwardSpec.parse("127.0.0.1:8080:127.0.0.1:80").count == 1)
    }

    @Test func ipv6AndHostNames() throws {
        #expect(try PortForwardSpec.parse("[::1]:8080:[fd00::2]:80") == [
            spec(ip("::1"), 8080, ip("fd00::2"), 80)
        ])
        #expect(try PortForwardSpec.parse("8080:[fd00::2]:80:UDP") == [
            spec(loopback, 8080, ip("fd00::2"), 80, .udp)
        ])
        #expect(try PortForwardSpec.parse("[::]:8080:[::ffff:10.0.0.1]:80") == [
            spec(ip("::"), 8080, ip("::ffff:10.0.0.1"), 80)
        ])
        #expect(try PortForwardSpec.parse("[2001:DB8:0:0::1]:1:10.0.0.1:65535") == [
            spec(ip("2001:db8::1"), 1, ip("10.0.0.1"), 65535)
        ])
        #expect(try PortForwardSpec.parse("my-host_1.example.com.:22:Peer.Intranet:2222") == [
            spec(.name("my-host_1.example.com."), 22, .name("Peer.Intranet"), 2222)
        ])
        #expect(try PortForwardSpec.parse("8080:a1:80") == [spec(loopback, 8080, .name("a1"), 80)])
        // A leading number is the source port, never a host; a host with a letter is a host.
        #expect(try PortForwardSpec.parse("1:2.example:3:UDP") == [spec(loopback, 1, .name("2.example"), 3, .udp)])
        #expect(try PortForwardSpec.parse("x1:2:host:3") == [spec(.name("x1"), 2, .name("host"), 3)])
        // Leading zeros in ports, as Rust's u16 parser allows.
        #expect(try PortForwardSpec.parse("08080:host:00080") == [spec(loopback, 8080, .name("host"), 80)])
    }

    @Test func protocolListsAndCase() throws {
        func protocols(_ notation: String) throws -> [ForwardProtocol] {
            try PortForwardSpec.parse(notation).map(\.proto)
        }
        #expect(try protocols("8080:h:80") == [.tcp])
        #expect(try protocols("8080:h:80:tcp") == [.tcp])
        #expect(try protocols("8080:h:80:Udp") == [.udp])
        #expect(try protocols("8080:h:80:tCp,uDP") == [.tcp, .udp])
        #expect(try protocols("8080:h:80:udp,tcp") == [.udp, .tcp])
        #expect(try protocols("h:8080:h:80:UDP") == [.udp])
    }

    /// Surrounding whitespace (a newline at the end of an environment value) is trimmed; inside, it is an error.
    @Test func whitespace() throws {
        let expected = [spec(loopback, 8080, ip("10.0.0.1"), 80)]
        #expect(try PortForwardSpec.parse("8080:10.0.0.1:80\n") == expected)
        #expect(try PortForwardSpec.parse("  8080:10.0.0.1:80 \t") == expected)
        #expect(try PortForwardSpec.parse("\r\n8080:10.0.0.1:80:TCP\r\n") == expected)
        // Messages quote the notation as given, untrimmed.
        try expectError(
            " 8080 :10.0.0.1:80",
            #"invalid port "8080 " in port forward " 8080 :10.0.0.1:80" (expected 1 to 65535)"#)
        try expectError("8080: 10.0.0.1:80", #"invalid host " 10.0.0.1" in port forward "8080: 10.0.0.1:80""#)
        try expectError(
            "8080:10.0.0.1:80: TCP",
            #"unknown protocol " TCP" in port forward "8080:10.0.0.1:80: TCP" (expected TCP, UDP or TCP,UDP)"#)
        try expectError(
            "8080:10.0.0.1:80:TCP, UDP",
            #"unknown protocol " UDP" in port forward "8080:10.0.0.1:80:TCP, UDP" (expected TCP, UDP or TCP,UDP)"#)
        try expectError("   ", #"invalid port forward "   ": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#)
    }

    /// Each malformed form and its exact message.
    @Test(arguments: [
        // Shape
        ("", #"invalid port forward "": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        ("8080:foo", #"invalid port forward "8080:foo": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        ("8080", #"invalid port forward "8080": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        ("a:1:b:2:TCP:x",
         #"invalid port forward "a:1:b:2:TCP:x": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        ("[::1:8080:h:80",
         #"invalid port forward "[::1:8080:h:80": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        ("::1]:8080:h:80",
         #"invalid port forward "::1]:8080:h:80": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        ("[::1]8080:h:80",
         #"invalid port forward "[::1]8080:h:80": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        ("x[::1]:8080:h:80",
         #"invalid port forward "x[::1]:8080:h:80": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        ("[[::1]]:8080:h:80",
         #"invalid port forward "[[::1]]:8080:h:80": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        // Unbracketed IPv6
        ("::1:8080:10.0.0.1:80",
         #"invalid port forward "::1:8080:10.0.0.1:80": IPv6 addresses must be in brackets, as in [::1]:8080:[fd00::2]:80"#),
        ("[::1]:8080:fd00::2:80",
         #"invalid port forward "[::1]:8080:fd00::2:80": IPv6 addresses must be in brackets, as in [::1]:8080:[fd00::2]:80"#),
        ("8080:fd00::2:80",
         #"invalid port forward "8080:fd00::2:80": IPv6 addresses must be in brackets, as in [::1]:8080:[fd00::2]:80"#),
        ("fe80::1:80",
         #"invalid port forward "fe80::1:80": IPv6 addresses must be in brackets, as in [::1]:8080:[fd00::2]:80"#),
        ("1:2:3:4:5:6",
         #"invalid port forward "1:2:3:4:5:6": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        // Hosts
        ("8080::80", #"empty host in port forward "8080::80""#),
        (":8080:h:80", #"empty host in port forward ":8080:h:80""#),
        ("[]:8080:h:80", #"empty host in port forward "[]:8080:h:80""#),
        ("8080:[]:80", #"empty host in port forward "8080:[]:80""#),
        ("8080:123:80", #"invalid host "123" in port forward "8080:123:80""#),
        ("8080:10.0.0:80", #"invalid host "10.0.0" in port forward "8080:10.0.0:80""#),
        ("8080:256.0.0.1:80", #"invalid host "256.0.0.1" in port forward "8080:256.0.0.1:80""#),
        ("8080:[10.0.0.1]:80", #"invalid host "[10.0.0.1]" in port forward "8080:[10.0.0.1]:80""#),
        ("8080:[peer]:80", #"invalid host "[peer]" in port forward "8080:[peer]:80""#),
        ("[fe80::1%eth0]:8080:h:80", #"invalid host "[fe80::1%eth0]" in port forward "[fe80::1%eth0]:8080:h:80""#),
        ("8080:a..b:80", #"invalid host "a..b" in port forward "8080:a..b:80""#),
        ("8080:-a:80", #"invalid host "-a" in port forward "8080:-a:80""#),
        ("8080:a/b:80", #"invalid host "a/b" in port forward "8080:a/b:80""#),
        ("8080:pêche:80", #"invalid host "pêche" in port forward "8080:pêche:80""#),
        ("8080:a,b:80", #"invalid host "a,b" in port forward "8080:a,b:80""#),
        // Ports
        ("0:h:80", #"invalid port "0" in port forward "0:h:80" (expected 1 to 65535)"#),
        ("8080:h:0", #"invalid port "0" in port forward "8080:h:0" (expected 1 to 65535)"#),
        ("h:00:h:80", #"invalid port "00" in port forward "h:00:h:80" (expected 1 to 65535)"#),
        ("99999:h:80", #"invalid port "99999" in port forward "99999:h:80" (expected 1 to 65535)"#),
        ("8080:h:65536", #"invalid port "65536" in port forward "8080:h:65536" (expected 1 to 65535)"#),
        ("8080:h:184467440737095516160",
         #"invalid port "184467440737095516160" in port forward "8080:h:184467440737095516160" (expected 1 to 65535)"#),
        ("-1:h:80", #"invalid port "-1" in port forward "-1:h:80" (expected 1 to 65535)"#),
        ("8080:h:+80", #"invalid port "+80" in port forward "8080:h:+80" (expected 1 to 65535)"#),
        ("8080:h:", #"invalid port "" in port forward "8080:h:" (expected 1 to 65535)"#),
        ("h::h:80", #"invalid port "" in port forward "h::h:80" (expected 1 to 65535)"#),
        ("8080:h:80x", #"invalid port "80x" in port forward "8080:h:80x" (expected 1 to 65535)"#),
        ("8080:h:0x50", #"invalid port "0x50" in port forward "8080:h:0x50" (expected 1 to 65535)"#),
        ("8080:h:[80]", #"invalid port "[80]" in port forward "8080:h:[80]" (expected 1 to 65535)"#),
        ("8080:h:８０", #"invalid port "８０" in port forward "8080:h:８０" (expected 1 to 65535)"#),
        ("a:1:b:2:80", #"unknown protocol "80" in port forward "a:1:b:2:80" (expected TCP, UDP or TCP,UDP)"#),
        // Protocols
        ("8080:h:80:SCTP", #"unknown protocol "SCTP" in port forward "8080:h:80:SCTP" (expected TCP, UDP or TCP,UDP)"#),
        ("8080:h:80:", #"unknown protocol "" in port forward "8080:h:80:" (expected TCP, UDP or TCP,UDP)"#),
        ("8080:h:80:TCP,", #"unknown protocol "" in port forward "8080:h:80:TCP," (expected TCP, UDP or TCP,UDP)"#),
        ("8080:h:80:,UDP", #"unknown protocol "" in port forward "8080:h:80:,UDP" (expected TCP, UDP or TCP,UDP)"#),
        ("8080:h:80:TCP;UDP",
         #"unknown protocol "TCP;UDP" in port forward "8080:h:80:TCP;UDP" (expected TCP, UDP or TCP,UDP)"#),
        ("8080:h:80:[TCP]",
         #"unknown protocol "[TCP]" in port forward "8080:h:80:[TCP]" (expected TCP, UDP or TCP,UDP)"#),
        ("8080:h:80:ＴＣＰ", #"unknown protocol "ＴＣＰ" in port forward "8080:h:80:ＴＣＰ" (expected TCP, UDP or TCP,UDP)"#),
        ("8080:h:80:TCP,tcp", #"protocol TCP listed twice in port forward "8080:h:80:TCP,tcp""#),
        // Control characters are escaped, so the message stays on one line.
        ("8080:h\n1:80", #"invalid host "h\n1" in port forward "8080:h\n1:80""#),
        ("8080:\"h\":80", #"invalid host "\"h\"" in port forward "8080:\"h\":80""#),
    ])
    func malformed(notation: String, message: String) throws {
        try expectError(notation, message)
    }

    @Test func errorValues() {
        #expect(throws: PortForwardSpecError.invalidPort("0", notation: "0:h:80")) {
            try PortForwardSpec.parse("0:h:80")
        }
        #expect(throws: PortForwardSpecError.unknownProtocol("SCTP", notation: "1:h:2:SCTP")) {
            try PortForwardSpec.parse("1:h:2:SCTP")
        }
        #expect(throws: PortForwardSpecError.malformed(notation: "")) { try PortForwardSpec.parse("") }
        #expect(throws: PortForwardSpecError.remoteSourceMismatch(
            .name("x"), sourcePeerIP: peer, notation: "x:1:h:2")) {
            try PortForwardSpec.parseRemote("x:1:h:2", sourcePeerIP: peer)
        }
    }

    @Test func canonicalNotation() throws {
        let cases: [(String, [String])] = [
            ("8080:192.168.4.1:8081", ["127.0.0.1:8080:192.168.4.1:8081:TCP"]),
            ("[::1]:8080:[FD00:0::2]:80:udp,TCP", ["[::1]:8080:[fd00::2]:80:UDP", "[::1]:8080:[fd00::2]:80:TCP"]),
            ("localhost:08080:peer.intranet:8081", ["localhost:8080:peer.intranet:8081:TCP"]),
        ]
        for (notation, printed) in cases {
            let specs = try PortForwardSpec.parse(notation)
            #expect(specs.map(\.notation) == printed)
            #expect(specs.map(\.description) == printed)
            for spec in specs { #expect(try PortForwardSpec.parse(spec.notation) == [spec]) }
        }
        let remote = try PortForwardSpec.parseRemote("8080:[::1]:8081:udp", sourcePeerIP: peer)
        #expect(remote.map(\.notation) == ["192.168.4.3:8080:[::1]:8081:UDP"])
        #expect(remote.map(\.description) == ["192.168.4.3:8080:[::1]:8081:UDP (remote)"])
        #expect(try PortForwardSpec.parseRemote(remote[0].notation, sourcePeerIP: peer) == remote)
    }

    private func expectError(
        _ notation: String, _ message: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        do {
            let specs = try PortForwardSpec.parse(notation)
            Issue.record("\(notation.debugDescription) parsed as \(specs)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.description == message, sourceLocation: sourceLocation)
            #expect(!error.description.contains("\n"), sourceLocation: sourceLocation)
        }
    }
}
