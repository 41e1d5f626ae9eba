import CUV
import Glibc

/// A UDP relay that behaves like a WAN path, for benchmarks and tests where `tc netem` is not available:
///
///     netem-relay --listen 10.77.0.2:51821 --target 127.0.0.1:51820 --delay-ms 25 [--loss 0.01]
///                 [--reorder 0.02] [--reorder-delay-ms 5] [--duplicate 0.01] [--corrupt 0.001]
///                 [--rate-mbit 100 --queue-kb 256] [--seed 1] [--buffer-kb 4096]
///
/// Datagrams arriving on `--listen` go to `--target` from a socket of their own; replies go back to the
/// address the last datagram on `--listen` came from (one client, as a WireGuard peer is). Each way
/// separately: a datagram is lost with probability `--loss`; with `--rate-mbit` it then queues at a
/// bottleneck of that rate whose queue holds `--queue-kb` (tail drop past it, as a router's FIFO); it is
/// delivered `--delay-ms` later, `--reorder-delay-ms` later still with probability `--reorder` (so the
/// datagrams behind it overtake it), a second copy follows with probability `--duplicate`, and one byte
/// is flipped with probability `--corrupt`. Randomness is seeded (`--seed`), so a run's decisions repeat.
///
/// One thread, ppoll(2) with nanosecond timeouts, recvmmsg/sendmmsg in batches, a fixed pool of
/// datagram slots and a heap of departure times: it adds well under a millisecond to the configured
/// delay at a few hundred thousand datagrams per second. SIGINT or SIGTERM end it; it then prints its
/// counters as one JSON line on standard error.
@main
struct NetemRelay {
    static func main() {
        var options: Options
        do {
            options = try Options(arguments: Array(CommandLine.arguments.dropFirst()))
        } catch {
            printError("netem-relay: \(error.message)")
            exit(2)
        }
        let relay: Relay
        do {
            relay = try Relay(options: options)
        } catch {
            printError("netem-relay: \(error.message)")
            exit(1)
        }
        installSignalHandlers()
        relay.run()
        printError(relay.summary())
    }
}

func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

struct RelayError: Error {
    let message: String
    init(_ message: String) { self.message = message }
    static func system(_ what: String) -> RelayError { RelayError("\(what): \(String(cString: strerror(errno)))") }
}

struct Options {
    var listen = sockaddr_storage()
    var target = sockaddr_storage()
    var delay: UInt64 = 0
    var loss = 0.0
    var reorder = 0.0
    var reorderDelay: UInt64 = 5_000_000
    var duplicate = 0.0
    var corrupt = 0.0
    /// Bits per second at the bottleneck; 0 for none.
    var rate: UInt64 = 0
    var queueBytes = 256 << 10
    var seed: UInt64 = 1
    var bufferBytes: Int32 = 4 << 20

    init(arguments: [String]) throws(RelayError) {
        var haveListen = false
        var haveTarget = false
        var i = 0
        func value(_ name: String) throws(RelayError) -> String {
            i += 1
            guard i < arguments.count else { throw RelayError("\(name) needs a value") }
            return arguments[i]
        }
        func number(_ name: String, _ text: String, _ range: ClosedRange<Double>) throws(RelayError) -> Double {
            guard let v = Double(text), range.contains(v) else {
                throw RelayError("\(name) \(text): not a number in \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
        while i < arguments.count {
            let name = arguments[i]
            switch name {
            case "--listen":
                listen = try Self.address(try value(name), name)
                haveListen = true
            case "--target":
                target = try Self.address(try value(name), name)
                haveTarget = true
            case "--delay-ms": delay = UInt64(try number(name, try value(name), 0...10_000) * 1e6)
            case "--loss": loss = try number(name, try value(name), 0...1)
            case "--reorder": reorder = try number(name, try value(name), 0...1)
            case "--reorder-delay-ms": reorderDelay = UInt64(try number(name, try value(name), 0...10_000) * 1e6)
            case "--duplicate": duplicate = try number(name, try value(name), 0...1)
            case "--corrupt": corrupt = try number(name, try value(name), 0...1)
            case "--rate-mbit": rate = UInt64(try number(name, try value(name), 0...100_000) * 1e6)
            case "--queue-kb": queueBytes = Int(try number(name, try value(name), 1...1_048_576)) << 10
            case "--seed": seed = UInt64(try number(name, try value(name), 0...1e15))
            case "--buffer-kb": bufferBytes = Int32(try number(name, try value(name), 16...262_144)) << 10
            default: throw RelayError("unknown option \(name)")
            }
            i += 1
        }
        guard haveListen, haveTarget else { throw RelayError("--listen and --target are required") }
    }

    /// `a.b.c.d:port` or `[v6]:port`.
    static func address(_ text: String, _ option: String) throws(RelayError) -> sockaddr_storage {
        var storage = sockaddr_storage()
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
            throw RelayError("\(option) \(text): expected HOST:PORT")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let ok = withUnsafeMutablePointer(to: &storage) { pointer -> Bool in
            if host.contains(":") {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                    sin6.pointee.sin6_port = port.bigEndian
                    return inet_pton(AF_INET6, host, &sin6.pointee.sin6_addr) == 1
                }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = port.bigEndian
                return inet_pton(AF_INET, host, &sin.pointee.sin_addr) == 1
            }
        }
        guard ok else { throw RelayError("\(option) \(text): not a literal IPv4 or IPv6 address") }
        return storage
    }
}

nonisolated(unsafe) var stopRequested: sig_atomic_t = 0

func installSignalHandlers() {
    var action = sigaction()
    action.__sigaction_handler.sa_handler = { _ in stopRequested = 1 }
    sigemptyset(&action.sa_mask)
    for signal in [SIGINT, SIGTERM] { sigaction(signal, &action, nil) }
}

/// xorshift64*: fast, seeded, good enough to decide which datagrams to drop.
struct Random {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
    /// True with probability `p`.
    mutating func chance(_ p: Double) -> Bool { p > 0 && Double(next() >> 11) * 0x1p-53 < p }
}

/// One way through the relay.
struct Direction {
    var received = 0
    var lost = 0
    var queueDrops = 0
    var reordered = 0
    var duplicated = 0
    var corrupted = 0
    var sent = 0
    var sendErrors = 0
    var oversized = 0
    var poolDrops = 0
    /// When the bottleneck finishes sending what it has queued.
    var busyUntil: UInt64 = 0

    func json(_ name: String) -> String {
        "\"\(name)\":{\"received\":\(received),\"sent\":\(sent),\"lost\":\(lost),\"queue_drops\":\(queueDrops),"
            + "\"reordered\":\(reordered),\"duplicated\":\(duplicated),\"corrupted\":\(corrupted),"
            + "\"send_errors\":\(sendErrors),\"oversized\":\(oversized),\"pool_drops\":\(poolDrops)}"
    }
}

/// A datagram waiting for its departure time.
struct Pending: Comparable {
    var due: UInt64
    var order: UInt64
    var slot: Int32
    var length: Int32
    /// 0: towards the target; 1: back to the client.
    var way: Int32
    static func < (a: Pending, b: Pending) -> Bool { a.due != b.due ? a.due < b.due : a.order < b.order }
}

final class Relay {
    static let slotSize = 2048
    static let slotCount = 32_768
    static let batch = 64

    let options: Options
    let client: Int32
    let upstream: Int32
    var clientAddress = sockaddr_storage()
    var clientAddressLength: socklen_t = 0
    var random: Random
    var ways = [Direction(), Direction()]
    let slots: UnsafeMutableRawPointer
    var freeSlots: [Int32]
    var heap: [Pending] = []
    var order: UInt64 = 0
    let messages = UnsafeMutablePointer<onetun_mmsghdr>.allocate(capacity: Relay.batch)
    let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: Relay.batch)
    let names = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: Relay.batch)
    let batchSlots = UnsafeMutablePointer<Int32>.allocate(capacity: Relay.batch)

    init(options: Options) throws(RelayError) {
        self.options = options
        random = Random(seed: options.seed)
        slots = UnsafeMutableRawPointer.allocate(byteCount: Self.slotSize * Self.slotCount, alignment: 64)
        freeSlots = (0..<Int32(Self.slotCount)).reversed()
        client = socket(Int32(options.listen.ss_family), Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard client >= 0 else { throw .system("socket") }
        upstream = socket(Int32(options.target.ss_family), Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard upstream >= 0 else { throw .system("socket") }
        var listen = options.listen
        var target = options.target
        let length = { (s: sockaddr_storage) in socklen_t(s.ss_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size) }
        let bound = withUnsafePointer(to: &listen) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(client, $0, length(options.listen)) } }
        guard bound == 0 else { throw .system("binding --listen") }
        let connected = withUnsafePointer(to: &target) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, length(options.target)) } }
        guard connected == 0 else { throw .system("connecting to --target") }
        for fd in [client, upstream] {
            var size = options.bufferBytes
            // SO_RCVBUFFORCE as root goes past net.core.rmem_max; otherwise the capped SO_RCVBUF.
            if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, 4) != 0 { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, 4) }
            if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, 4) != 0 { setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, 4) }
        }
        heap.reserveCapacity(Self.slotCount)
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    func run() {
        var fds = [pollfd(fd: client, events: Int16(POLLIN), revents: 0), pollfd(fd: upstream, events: Int16(POLLIN), revents: 0)]
        while stopRequested == 0 {
            var now = Self.now()
            release(now)
            var timeout = timespec(tv_sec: 1, tv_nsec: 0)
            if let first = heap.first {
                let wait = first.due > now ? first.due - now : 0
                timeout = timespec(tv_sec: Int(wait / 1_000_000_000), tv_nsec: Int(wait % 1_000_000_000))
            }
            let rc = onetun_ppoll(&fds, 2, &timeout, nil)
            if rc < 0 && errno != EINTR { break }
            now = Self.now()
            if fds[0].revents & Int16(POLLIN) != 0 { receive(fd: client, way: 0, now: now) }
            if fds[1].revents & Int16(POLLIN) != 0 { receive(fd: upstream, way: 1, now: now) }
        }
    }

    /// Reads every waiting datagram of `fd` (in batches) and schedules it.
    func receive(fd: Int32, way: Int, now: UInt64) {
        for _ in 0..<64 {
            var count = 0
            while count < Self.batch, let slot = freeSlots.popLast() {
                batchSlots[count] = slot
                iovecs[count] = iovec(iov_base: slots + Int(slot) * Self.slotSize, iov_len: Self.slotSize)
                let header = withUnsafeMutablePointer(to: &messages[count].msg_hdr) { $0 }
                header.pointee = msghdr()
                header.pointee.msg_iov = iovecs + count
                header.pointee.msg_iovlen = 1
                header.pointee.msg_name = UnsafeMutableRawPointer(names + count)
                header.pointee.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
                count += 1
            }
            if count == 0 {
                // The pool is empty: read and drop one, so the socket does not stall.
                var scratch = (UInt64(0), UInt64(0))
                if recv(fd, &scratch, 16, Int32(MSG_DONTWAIT)) >= 0 { ways[way].poolDrops += 1 }
                return
            }
            let n = Int(onetun_recvmmsg_raw(fd, messages, UInt32(count), Int32(MSG_DONTWAIT), nil))
            let got = max(n, 0)
            for i in 0..<got {
                let slot = batchSlots[i]
                let length = Int(messages[i].msg_len)
                if way == 0 {
                    clientAddress = names[i]
                    clientAddressLength = messages[i].msg_hdr.msg_namelen
                }
                if messages[i].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 {
                    ways[way].oversized += 1
                    freeSlots.append(slot)
                    continue
                }
                schedule(slot: slot, length: length, way: way, now: now)
            }
            for i in got..<count { freeSlots.append(batchSlots[i]) }
            if got < count { return }
        }
    }

    func schedule(slot: Int32, length: Int, way: Int, now: UInt64) {
        ways[way].received += 1
        if random.chance(options.loss) {
            ways[way].lost += 1
            freeSlots.append(slot)
            return
        }
        var departure = now
        if options.rate > 0 {
            // A FIFO drained at `rate`: the datagram leaves when everything before it has; past the queue's
            // size it is dropped at the tail.
            let start = max(now, ways[way].busyUntil)
            let backlog = Double(start - now) * Double(options.rate) / 8e9
            if Int(backlog) + length > options.queueBytes {
                ways[way].queueDrops += 1
                freeSlots.append(slot)
                return
            }
            departure = start + UInt64(Double(length) * 8e9 / Double(options.rate))
            ways[way].busyUntil = departure
        }
        var due = departure + options.delay
        if random.chance(options.reorder) {
            ways[way].reordered += 1
            due += options.reorderDelay
        }
        if random.chance(options.corrupt) {
            ways[way].corrupted += 1
            let bytes = slots + Int(slot) * Self.slotSize
            let at = Int(random.next() % UInt64(max(length, 1)))
            bytes.storeBytes(of: bytes.load(fromByteOffset: at, as: UInt8.self) ^ 0x5A, toByteOffset: at, as: UInt8.self)
        }
        if random.chance(options.duplicate), let copy = freeSlots.popLast() {
            ways[way].duplicated += 1
            (slots + Int(copy) * Self.slotSize).copyMemory(from: slots + Int(slot) * Self.slotSize, byteCount: length)
            push(Pending(due: due + 100_000, order: 0, slot: copy, length: Int32(length), way: Int32(way)))
        }
        push(Pending(due: due, order: 0, slot: slot, length: Int32(length), way: Int32(way)))
    }

    /// Sends everything due by `now`, each way in batches.
    func release(_ now: UInt64) {
        var pendingWay = -1
        var count = 0
        func flush() {
            guard count > 0 else { return }
            send(way: pendingWay, count: count)
            count = 0
        }
        while let first = heap.first, first.due <= now {
            let item = pop()
            let way = Int(item.way)
            if way != pendingWay || count == Self.batch {
                flush()
                pendingWay = way
            }
            batchSlots[count] = item.slot
            iovecs[count] = iovec(iov_base: slots + Int(item.slot) * Self.slotSize, iov_len: Int(item.length))
            count += 1
        }
        flush()
    }

    func send(way: Int, count: Int) {
        let toClient = way == 1
        if toClient && clientAddressLength == 0 {
            for i in 0..<count { freeSlots.append(batchSlots[i]) }
            ways[way].sendErrors += count
            return
        }
        for i in 0..<count {
            let header = withUnsafeMutablePointer(to: &messages[i].msg_hdr) { $0 }
            header.pointee = msghdr()
            header.pointee.msg_iov = iovecs + i
            header.pointee.msg_iovlen = 1
            if toClient {
                names[i] = clientAddress
                header.pointee.msg_name = UnsafeMutableRawPointer(names + i)
                header.pointee.msg_namelen = clientAddressLength
            }
        }
        var done = 0
        var skipped = 0
        var attempts = 0
        while done < count && attempts < 8 {
            attempts += 1
            let rc = onetun_sendmmsg_raw(toClient ? client : upstream, messages + done, UInt32(count - done), 0)
            if rc > 0 {
                done += Int(rc)
            } else if rc < 0 && errno == EINTR {
                continue
            } else if rc < 0 && (errno == EAGAIN || errno == ENOBUFS) {
                // The socket buffer is full: a real link would have dropped it too; count it.
                break
            } else {
                // One datagram refused (for example ECONNREFUSED from an earlier ICMP error): skip it.
                done += 1
                skipped += 1
            }
        }
        ways[way].sent += done - skipped
        ways[way].sendErrors += count - done + skipped
        for i in 0..<count { freeSlots.append(batchSlots[i]) }
    }

    func push(_ item: Pending) {
        var item = item
        order &+= 1
        item.order = order
        heap.append(item)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i] < heap[parent] else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    func pop() -> Pending {
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1
                let r = l + 1
                var m = i
                if l < heap.count && heap[l] < heap[m] { m = l }
                if r < heap.count && heap[r] < heap[m] { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        return top
    }

    func summary() -> String { "{" + ways[0].json("to_target") + "," + ways[1].json("to_client") + "}" }
}
