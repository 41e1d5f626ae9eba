import CUV
import Glibc
import Logging
import OneTunCore

// Remote TCP forwards: connections accepted on our address inside the tunnel, each joined to a new local
// connection; from then on they are served like local TCP forwards' clients (LocalTCPForwards.swift).
extension Forwarder {
    /// Connections the tunnel's listeners accepted: each gets a local connection to its forward's destination.
    func acceptRemote() {
        let now = TunnelLoop.now()
        var budget = 1024
        defer { if budget == 0 { driver.continueNextIteration() } }
        while budget > 0, let id = core.accept() {
            budget -= 1
            let connection = core.connection(id)
            if let socks = remoteSocks, connection.localPort == socks.port {
                guard !shuttingDown, underLimit("SOCKS5 client from the tunnel", now: now) else {
                    core.release(id)
                    continue
                }
                acceptRemoteSocks(id, now: now)
                continue
            }
            let forward = remoteTCP[connection.localPort]
            guard !shuttingDown, var destination = forward?.destination,
                underLimit("connection from the tunnel to port \(connection.localPort)", now: now)
            else {
                forward?.stats?.refused += 1
                core.release(id)
                continue
            }
            let client = Client(forwarder: self, forward: -1, now: now)
            client.stats = forward?.stats
            forward?.stats?.opened += 1
            client.id = id
            client.connected = false
            uv_tcp_init(driver.loop, client.handle)
            client.handle.pointee.data = Unmanaged.passRetained(client).toOpaque()
            while clients.count <= id { clients.append(nil) }
            clients[id] = client
            connectionsOpened += 1
            client.connectRequest.pointee.data = client.handle.pointee.data
            let rc = withUnsafePointer(to: &destination) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    uv_tcp_connect(client.connectRequest, client.handle, $0) { request, status in
                        let client = Unmanaged<Client>.fromOpaque(request!.pointee.data).takeUnretainedValue()
                        guard !client.closing else { return }
                        if status < 0 {
                            client.forwarder.teardown(client, reset: false, reason: "local connection failed: \(String(cString: uv_strerror(status)))")
                            return
                        }
                        client.connected = true
                        uv_tcp_nodelay(client.handle, 1)
                        client.forwarder.startReading(client)
                        client.forwarder.core.notify(client.id)
                    }
                }
            }
            if rc < 0 {
                teardown(client, reset: false, reason: "local connection failed: \(String(cString: uv_strerror(rc)))")
                continue
            }
            logger.debug("connection \(id): accepted from the tunnel on port \(connection.localPort)")
        }
    }
}
