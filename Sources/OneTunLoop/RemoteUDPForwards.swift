import CUV
import Glibc
import Logging
import OneTunCore

// Remote UDP forwards: each remote endpoint writing to a forwarded port gets a flow, its own local socket
// connected to the destination. Flows sit in a list from least to most recently used (intrusive, so
// finding the oldest costs nothing): one idle for the core's `udpIdleTimeout` (60 s, as the port pool's
// virtual ports) closes, on a timer armed to the oldest flow's expiry; past `maximumRemoteFlows` the
// oldest makes room.
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
        /// Its forward's counters.
        var stats: ForwardStats?
        /// Neighbours in the forwarder's recency list: `older` towards the least recently used.
        var newer: RemoteFlow?
        weak var older: RemoteFlow?

        init(key: RemoteFlowKey, forwarder: Forwarder, now: Instant) {
            self.key = key
            self.forwarder = forwarder
            lastUsed = now
        }
    }

    /// The recency list of remote flows: `oldest` first, each holding the next newer one.
    struct FlowList {
        var oldest: RemoteFlow?
        weak var newest: RemoteFlow?

        mutating func append(_ flow: RemoteFlow) {
            flow.older = newest
            flow.newer = nil
            if let newest { newest.newer = flow } else { oldest = flow }
            newest = flow
        }

        mutating func remove(_ flow: RemoteFlow) {
            if let older = flow.older { older.newer = flow.newer } else { oldest = flow.newer }
            if let newer = flow.newer { newer.older = flow.older } else { newest = flow.older }
            flow.newer = nil
            flow.older = nil
        }

        /// Marks `flow` used now: it becomes the newest.
        mutating func touch(_ flow: RemoteFlow) {
            guard newest !== flow else { return }
            remove(flow)
            append(flow)
        }
    }

    /// A remote flow with no datagram either way for this long closes.
    var flowIdleTimeout: UInt64 { core.config.udpIdleTimeout }

    /// A datagram from the tunnel to a remote UDP forward's port: it goes out of the flow's own local
    /// socket, connected to the destination, whose replies return through the tunnel.
    func remoteDatagram(_ forward: RemoteForward, from remote: UDPEndpoint, payload: UnsafeRawBufferPointer) {
        guard !shuttingDown else { return }
        let now = TunnelLoop.now()
        let key = RemoteFlowKey(port: forward.port, remote: remote)
        var flow = remoteFlows[key]
        if flow == nil {
            if remoteFlows.count >= Self.maximumRemoteFlows, let oldest = flowList.oldest { closeFlow(oldest) }
            guard underLimit("remote UDP flow from \(remote)", now: now) else {
                datagramsDropped += 1
                forward.stats?.refused += 1
                return
            }
            let made = RemoteFlow(key: key, forwarder: self, now: now)
            made.stats = forward.stats
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
                        let f = flow.forwarder
                        flow.lastUsed = TunnelLoop.now()
                        f.flowList.touch(flow)
                        if f.core.sendDatagram(from: flow.key.port, to: flow.key.remote, payload: UnsafeRawBufferPointer(rebasing: f.udpBuffer[0..<nread])) {
                            f.datagramsReturned += 1
                            flow.stats?.datagramsSent += 1
                            flow.stats?.bytesSent += nread
                        } else {
                            f.datagramsDropped += 1
                            flow.stats?.refused += 1
                        }
                    })
            }
            remoteFlows[key] = made
            made.stats?.opened += 1
            flowList.append(made)
            armFlowExpiry()
            guard rc == 0 else {
                logger.debug("remote UDP flow from \(remote): \(String(cString: uv_strerror(rc)))")
                closeFlow(made)
                datagramsDropped += 1
                return
            }
            flow = made
        }
        flow!.lastUsed = now
        flowList.touch(flow!)
        var buf = datagramBuffer(payload)
        if uv_udp_try_send(flow!.handle, &buf, 1, nil) < 0 {
            datagramsDropped += 1
            forward.stats?.refused += 1
        } else {
            datagramsForwarded += 1
            forward.stats?.datagramsReceived += 1
            forward.stats?.bytesReceived += payload.count
        }
    }

    /// Arms the flow timer for the oldest flow's expiry (started once; re-armed as it fires).
    func armFlowExpiry() {
        let flowTimer = timerHandle(&self.flowTimer)
        guard uv_is_active(UnsafeMutableRawPointer(flowTimer).assumingMemoryBound(to: uv_handle_t.self)) == 0,
            let oldest = flowList.oldest
        else { return }
        let due = oldest.lastUsed.adding(flowIdleTimeout)
        let now = TunnelLoop.now()
        let ms = due <= now ? 0 : (due.since(now) + 999_999) / 1_000_000
        uv_timer_start(flowTimer, { timer in
            let me = Unmanaged<Forwarder>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
            me.expireFlows(now: TunnelLoop.now())
        }, ms, 0)
    }

    /// Closes every flow idle for `flowIdleTimeout`, oldest first (the list is in order of last use).
    func expireFlows(now: Instant) {
        while let oldest = flowList.oldest, now.since(oldest.lastUsed) >= flowIdleTimeout {
            logger.debug("remote UDP flow from \(oldest.key.remote) to port \(oldest.key.port): idle, closed")
            closeFlow(oldest)
        }
        if !shuttingDown { armFlowExpiry() }
    }

    func closeFlow(_ flow: RemoteFlow) {
        flow.stats?.closed += 1
        remoteFlows[flow.key] = nil
        flowList.remove(flow)
        uv_udp_recv_stop(flow.handle)
        uv_close(UnsafeMutableRawPointer(flow.handle).assumingMemoryBound(to: uv_handle_t.self)) { handle in
            let flow = Unmanaged<RemoteFlow>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            flow.handle.deallocate()
        }
    }
}
