import Glibc
import OneTunCore

/// `--pcap FILE`: every inner IP packet in and out, in the classic pcap format with the raw-IP link type
/// (LINKTYPE_RAW, 101: each record is an IPv4 or IPv6 packet). Records are buffered and written at the end
/// of every loop iteration, so the file is readable while onetun runs, and complete after it exits (a FIFO
/// whose reader is more than 2 s behind then may end mid-record).
///
/// Writing never blocks the loop: the descriptor is non-blocking (a FIFO whose reader is slow, a pipe),
/// what the reader has not taken stays in a bounded buffer, and a record that does not fit is not
/// captured, whole, and counted in `lost`: the stream stays a valid pcap file, and forwarding never waits.
public final class PcapWriter {
    let fd: Int32
    let path: String
    /// Bytes not yet written are `buffer[head..<used]`.
    var buffer: UnsafeMutableRawBufferPointer
    var head = 0
    var used = 0
    /// The reader took all it could this iteration: `record` does not try again before the next `flush`.
    var blocked = false
    public private(set) var packets = 0
    /// Packets not captured because the reader fell behind by a whole buffer (1 MiB).
    public private(set) var lost = 0
    public private(set) var failed = false
    /// Why writing stopped (the reader of a FIFO left, the disk is full); capture ends there.
    public private(set) var failure: String?

    static let linkTypeRaw: UInt32 = 101
    static let snapLength: UInt32 = 65_535

    /// Creates (or truncates) `path` and writes the file header. Opening a FIFO waits for its reader, as
    /// tcpdump's `-w` does; that happens before the loop starts.
    public init(path: String) throws(LoopError) {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LoopError("--pcap \(path): \(String(cString: strerror(errno)))") }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        self.path = path
        buffer = .allocate(byteCount: 1 << 20, alignment: 16)
        // Magic (microsecond timestamps), version 2.4, GMT offset, accuracy, snapshot length, link type.
        append(UInt32(0xA1B2_C3D4))
        append(UInt16(2))
        append(UInt16(4))
        append(UInt32(0))
        append(UInt32(0))
        append(Self.snapLength)
        append(Self.linkTypeRaw)
        flush()
    }

    deinit {
        close(fd)
        buffer.deallocate()
    }

    /// Records one packet, timestamped now (wall clock), or counts it in `lost` when the buffer is full.
    public func record(_ packet: UnsafeRawBufferPointer) {
        guard !failed else { return }
        let length = min(packet.count, Int(Self.snapLength))
        if used + 16 + length > buffer.count && !blocked { flush() }
        if used + 16 + length > buffer.count && head > 0 { compact() }
        guard used + 16 + length <= buffer.count else {
            lost += 1
            return
        }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        append(UInt32(truncatingIfNeeded: ts.tv_sec))
        append(UInt32(truncatingIfNeeded: ts.tv_nsec / 1000))
        append(UInt32(length))
        append(UInt32(packet.count))
        UnsafeMutableRawBufferPointer(rebasing: buffer[used..<(used + length)])
            .copyMemory(from: UnsafeRawBufferPointer(rebasing: packet[0..<length]))
        used += length
        packets += 1
    }

    /// Writes what is buffered, as much as the reader takes now.
    public func flush() {
        blocked = false
        while head < used && !failed {
            let n = write(fd, buffer.baseAddress! + head, used - head)
            if n > 0 {
                head += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                blocked = true
                return
            } else {
                failed = true
                failure = n < 0 ? String(cString: strerror(errno)) : "nothing written"
            }
        }
        head = 0
        used = 0
    }

    /// At exit: writes what is buffered, waiting for a slow reader at most `limit` nanoseconds.
    public func finish(waitingAtMost limit: UInt64) {
        var waited: UInt64 = 0
        flush()
        while head < used && !failed && waited < limit {
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, 50)
            waited += 50 * Nanos.millisecond
            flush()
        }
    }

    /// Moves what waits for the reader to the front, making room behind it.
    func compact() {
        guard head > 0 else { return }
        let waiting = used - head
        buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + head, byteCount: waiting)
        head = 0
        used = waiting
    }

    @inline(__always) func append<T: FixedWidthInteger>(_ value: T) {
        // pcap files are written in the host's byte order; the magic number tells readers which one.
        withUnsafeBytes(of: value) { bytes in
            UnsafeMutableRawBufferPointer(rebasing: buffer[used..<(used + bytes.count)]).copyMemory(from: bytes)
        }
        used += MemoryLayout<T>.size
    }
}
