import Foundation
import Logging
import OneTunCore
import OneTunLoop

/// Wires the settings to the core and the libuv loop and runs until done or signalled.
struct Runner {
    let settings: Settings

    init(_ settings: Settings) { self.settings = settings }

    func run() throws -> Int32 {
        let level = settings.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "onetun")
        for warning in settings.warnings { logger.warning("\(warning)") }
        let config = WireGuardConfig(
            privateKey: settings.privateKey, peerPublicKey: settings.endpointPublicKey,
            presharedKey: settings.presharedKey, persistentKeepaliveSeconds: settings.keepAlive, mtu: settings.mtu)
        let tunnel = WireGuardTunnel(config: config, random: SystemRandom())
        guard let target = settings.ping else {
            throw UsageError("no port forward given (TCP and UDP forwarding are not implemented yet; use --ping to check a tunnel)")
        }
        let payload = PingPayload(
            source: settings.sourcePeerIP, target: target, count: settings.pingCount,
            identifier: UInt16(truncatingIfNeeded: getpid()), mtu: settings.mtu, logger: logger)
        let loop = TunnelLoop(tunnel: tunnel, payload: payload, logger: logger)
        payload.onDone = { loop.stop() }
        try loop.start(endpoint: settings.endpoint, bind: settings.bind)
        logger.info("tunnel to \(settings.endpointDescription) as \(settings.sourcePeerIP); pinging \(target)")
        payload.start(now: TunnelLoop.now())
        loop.run()
        print("\(settings.pingCount) packets transmitted, \(payload.replies) received")
        return payload.replies > 0 ? 0 : 1
    }
}
