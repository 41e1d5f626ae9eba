import CUV
import Glibc
import Logging
import OneTunCore

// Remote UDP forwards: each remote endpoint writing to a forwarded port gets a flow, its own local socket
// connected to the destination; the least recently used flow closes past `maximumRemoteFlows`.
extension Forwarder {
    struct RemoteFlowKey: Hashable {
        var port: UInt16
        var remote: UDPEndpoint
    }

    final class RemoteFlow {
        let handle = UnsafeMutablePointer<uv_udp_t>.allocate(capacity: 1)
        let key: RemoteFlowKey
        unowned let forwarder: Forwarder
        var lastUsed: Instant

        init(key: RemoteFlowKey, forwarder: Forwarder, now: Instant) {
            self.key = key
            self.forwarder = forwarder
            lastUsed = now
        }
    }

    /// A datagram from the tunnel to a remote UDP forward's port: it goes out of the flow's own local
    /// socket, connected to the destination, whose replies return through the tunnel.
    func remoteDatagram(_ forward: RemoteForward, from remote: UDPEndpoint, payload: UnsafeRawBufferPointer) {
        guard !shuttingDown else { return }
        let now = TunnelLoop.now()
        let key = RemoteFlowKey(port: forward.port, remote: remote)
        var flow = remoteFlows[key]
        if flow == nil {
            guard underLimit("remote UDP flow from \(remote)", now: now) else {
                datagramsDropped += 1
                return
            }
            if remoteFlows.count >= Self.maximumRemoteFlows, let oldest = remoteFlows.values.min(by: { $0.lastUsed < $1.lastUsed }) {
                closeFlow(oldest)
            }
            let made = RemoteFlow(key: key, forwarder: self, now: now)
            var destination = forward.destination
            var rc = uv_udp_init_ex(driver.loop, made.handle, UInt32(destination.ss_family))
            guard rc == 0 else {
                // No socket (EMFILE, ENOBUFS): libuv never initialized the handle, so it must not be closed.
                made.handle.deallocate()
                logger.debug("remote UDP flow from \(remote): \(String(cString: uv_strerror(rc)))")
                datagramsDropped += 1
                return
            }
            made.handle.pointee.data = Unmanaged.passRetained(made).toOpaque()
            rc = withUnsafePointer(to: &destination) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_connect(made.handle, $0) }
            }
            if rc == 0 {
                rc = uv_udp_recv_start(
                    made.handle,
                    { handle, _, buf in
                        let flow = Unmanaged<RemoteFlow>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                        let b = flow.forwarder.udpBuffer
                        buf!.pointee = uv_buf_init(b.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(b.count))
                    },
                    { handle, nread, _, _, _ in
                        guard nread > 0 else { return }
                        let flow = Unmanaged<RemoteFlow>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                        flow.lastUsed = TunnelLoop.now()
                        let f = flow.forwarder
                        if f.core.sendDatagram(from: flow.key.port, to: flow.key.remote, payload: UnsafeRawBufferPointer(rebasing: f.udpBuffer[0..<nread])) {
                            f.datagramsReturned += 1
                        } else {
                            f.datagramsDropped += 1
                        }
                    })
            }
            remoteFlows[key] = made
            guard rc == 0 else {
                logger.debug("remote UDP flow from \(remote): \(String(cString: uv_strerror(rc)))")
                closeFlow(made)
                datagramsDropped += 1
                return
            }
            flow = made
        }
        flow!.lastUsed = now
        var buf = datagramBuffer(payload)
        if uv_udp_try_send(flow!.handle, &buf, 1, nil) < 0 {
            datagramsDropped += 1
        } else {
            datagramsForwarded += 1
        }
    }

    func closeFlow(_ flow: RemoteFlow) {
        remoteFlows[flow.key] = nil
        uv_udp_recv_stop(flow.handle)
        uv_close(UnsafeMutableRawPointer(flow.handle).assumingMemoryBound(to: uv_handle_t.self)) { handle in
            let flow = Unmanaged<RemoteFlow>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            flow.handle.deallocate()
        }
    }
}
