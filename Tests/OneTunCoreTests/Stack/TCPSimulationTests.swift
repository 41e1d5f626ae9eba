import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// The whole stack (interface, checksums, demultiplexing, TCP) against itself over a lossy simulated link.
@Suite struct TCPSimulationTests {
    /// 16 MiB each way arrives SHA-256-identical through loss, reordering, duplication and corruption.
    @Test(arguments: [(0.0, UInt64(21)), (0.01, UInt64(22)), (0.05, UInt64(23))])
    func sixteenMebibytesEachWay(loss: Double, seed: UInt64) throws {
        let link = LossyIPLink(seed: seed)
        link.loss = loss
        link.duplicate = loss > 0 ? 0.01 : 0
        link.corrupt = loss > 0 ? 0.005 : 0
        link.jitter = loss > 0 ? 4 * Nanos.millisecond : 0
        link.bandwidth = 200_000_000 / 8
        let size = 16 << 20
        link.serverTCP.listen(port: 5001)
        // IPv6 for one seed, IPv4 for the others.
        let (from, to) = seed == 22 ? ("fd00:4::3", "fd00:4::1") : ("192.168.4.3", "192.168.4.1")
        let id = try #require(link.clientTCP.connect(from: IPAddress(from)!, to: IPAddress(to)!, port: 5001, now: link.now))
        let up = HashingStreamApp(total: size, seed: seed)
        let down = HashingStreamApp(total: size, seed: seed &* 31)
        var serverID: Int?
        let done = link.run(seconds: 600, app: {
            if up.step(link.clientTCP.connection(id)) { link.clientTCP.markReady(id) }
            if serverID == nil { serverID = link.serverTCP.accept() }
            if let s = serverID, down.step(link.serverTCP.connection(s)) { link.serverTCP.markReady(s) }
        }, until: {
            up.receivedCount == size && down.receivedCount == size
                && link.clientTCP.connection(id).isReadClosed && serverID.map { link.serverTCP.connection($0).isReadClosed } == true
        })
        let client = link.clientTCP.connection(id)
        if !done {
            link.trace = true
            _ = link.run(seconds: 0.5, app: {}, until: { false })
            link.trace = false
        }
        #expect(done, "seed \(seed): up \(down.receivedCount) down \(up.receivedCount), client \(client.state) \(String(describing: client.error))")
        #expect(down.receivedDigest == up.sentDigest, "seed \(seed)")
        #expect(up.receivedDigest == down.sentDigest, "seed \(seed)")
        if loss > 0 {
            #expect(link.corrupted > 0)
            #expect(link.client.stats.droppedBadChecksum + link.client.stats.droppedMalformed
                    + link.server.stats.droppedBadChecksum + link.server.stats.droppedMalformed > 0)
        }
        print("16 MiB each way, \(loss * 100)% loss, seed \(seed): \(Double(link.now.nanoseconds) / 1e9 - 9000) simulated s, client \(client.stats)")
        print("client \(client.debugDescription) now \(link.now) next \(String(describing: link.server.nextDeadline()))")
        if let s = serverID { print("server \(link.serverTCP.connection(s).debugDescription) \(link.serverTCP.connection(s).stats)") }
    }
}
