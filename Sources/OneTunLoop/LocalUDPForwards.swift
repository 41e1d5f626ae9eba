import CUV
import Glibc
import Logging
import OneTunCore

/// One local UDP port forwarded to a destination inside the tunnel.
public struct UDPForward {
    public var listen: sockaddr_storage
    public var destination: UDPEndpoint
    public var description: String

    public init(listen: sockaddr_storage, destination: UDPEndpoint, description: String) {
        self.listen = listen
        self.destination = destination
        self.description = description
    }
}

// Local UDP forwards: a bound socket per forward; client datagrams go into the tunnel from the client's
// virtual port, and datagrams from the tunnel go back to their client (or to a remote UDP flow).
extension Forwarder {
    final class UDPListener {
        let handle = UnsafeMutablePointer<uv_udp_t>.allocate(capacity: 1)
        let forward: UDPForward
        unowned let forwarder: Forwarder
        var index: Int32 = -1
        let stats: ForwardStats

        init(forward: UDPForward, forwarder: Forwarder) {
            self.forward = forward
            self.forwarder = forwarder
            stats = ForwardStats(kind: .udp, description: forward.description)
        }
    }

    /// Binds every UDP forward's local address; throws naming the address when one cannot be used.
    public func listenUDP(_ forwards: [UDPForward]) throws(LoopError) {
        for forward in forwards {
            let listener = UDPListener(forward: forward, forwarder: self)
            var address = forward.listen
            var rc = uv_udp_init_ex(driver.loop, listener.handle, UInt32(address.ss_family))
            listener.handle.pointee.data = Unmanaged.passUnretained(listener).toOpaque()
            if rc == 0 {
                rc = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(listener.handle, $0, 0) }
                }
            }
            if rc == 0 {
                // Room for bursts from local clients while the loop is busy (the default is 208 KiB).
                var size: Int32 = 4 << 20
                _ = uv_recv_buffer_size(UnsafeMutableRawPointer(listener.handle).assumingMemoryBound(to: uv_handle_t.self), &size)
                rc = uv_udp_recv_start(
                    listener.handle,
                    { handle, _, buf in
                        let listener = Unmanaged<UDPListener>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                        let b = listener.forwarder.udpBuffer
                        buf!.pointee = uv_buf_init(b.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(b.count))
                    },
                    { handle, nread, _, addr, _ in
                        guard nread >= 0, let addr else { return }
                        let listener = Unmanaged<UDPListener>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                        listener.forwarder.clientDatagram(listener, length: nread, from: addr)
                    })
            }
            guard rc == 0 else {
                throw LoopError("cannot listen on UDP \(forward.description.split(separator: " ").first ?? ""): \(String(cString: uv_strerror(rc)))")
            }
            if udpListenerOfPort.isEmpty { udpListenerOfPort = [Int32](repeating: -1, count: 65_536) }
            listener.index = Int32(udpListeners.count)
            if udpListenerByDestination[forward.destination] == nil {
                udpListenerByDestination[forward.destination] = udpListeners.count
            }
            udpListeners.append(listener)
            forwardStats.append(listener.stats)
            logger.info("forwarding UDP \(forward.description)")
        }
    }

    /// A datagram from a local client: it leaves through the tunnel from the client's virtual port.
    func clientDatagram(_ listener: UDPListener, length: Int, from addr: UnsafePointer<sockaddr>) {
        guard !shuttingDown, let client = SocketAddressConversion.endpoint(addr) else { return }
        let now = TunnelLoop.now()
        let port = core.udpPorts.port(for: client, now: now)
        udpListenerOfPort[Int(port)] = listener.index
        let payload = UnsafeRawBufferPointer(rebasing: udpBuffer[0..<length])
        if core.sendDatagram(from: port, to: listener.forward.destination, payload: payload) {
            datagramsForwarded += 1
            listener.stats.datagramsSent += 1
            listener.stats.bytesSent += length
        } else {
            datagramsDropped += 1
            listener.stats.refused += 1
            logger.debug("UDP datagram of \(length) bytes from \(client) dropped: larger than the tunnel MTU allows, or the queue is full")
        }
    }

    /// Datagrams from the tunnel go back to the local client that owns their virtual port.
    func returnDatagrams() {
        // The UDP listeners and flows are closing: a send on one would reopen its socket under libuv.
        guard !shuttingDown else { return }
        let now = TunnelLoop.now()
        var budget = 4096
        defer { if budget == 0 { driver.continueNextIteration() } }
        while budget > 0, let d = core.pollDatagram() {
            budget -= 1
            if !socksAssociationOfPort.isEmpty && returnAssociated(d, now: now) { continue }
            if !tunnelAssociationOfPort.isEmpty, let association = tunnelAssociationOfPort[d.destination.port] {
                tunnelAssociationDatagram(association, d)
                continue
            }
            if let forward = remoteUDP[d.destination.port] {
                remoteDatagram(forward, from: d.source, payload: d.payload)
                continue
            }
            var index = Int(udpListenerOfPort.isEmpty ? -1 : udpListenerOfPort[Int(d.destination.port)])
            if index < 0 || udpListeners[index].forward.destination != d.source {
                index = udpListenerByDestination[d.source] ?? -1
            }
            guard index >= 0, let client = core.udpPorts.client(for: d.destination.port, now: now) else {
                datagramsDropped += 1
                logger.trace("UDP datagram from \(d.source) to port \(d.destination.port) has no client; dropped")
                continue
            }
            var address = SocketAddressConversion.storage(client)
            // Sent from the core's queue slot: the datagram's one copy was into it.
            var buf = datagramBuffer(d.payload)
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_try_send(udpListeners[index].handle, &buf, 1, $0) }
            }
            if rc < 0 {
                datagramsDropped += 1
                udpListeners[index].stats.refused += 1
            } else {
                datagramsReturned += 1
                udpListeners[index].stats.datagramsReceived += 1
                udpListeners[index].stats.bytesReceived += d.payload.count
            }
        }
    }
}
