import Glibc
import OneTunCore

/// `--pcap FILE`: every inner IP packet in and out, in the classic pcap format with the raw-IP link type
/// (LINKTYPE_RAW, 101: each record is an IPv4 or IPv6 packet). Records are buffered and written at the end
/// of every loop iteration, so the file is readable while onetun runs, and complete after it exits.
public final class PcapWriter {
    let fd: Int32
    let path: String
    var buffer: UnsafeMutableRawBufferPointer
    var used = 0
    public private(set) var packets = 0
    public private(set) var failed = false
    /// Why writing stopped (the reader of a FIFO left, the disk is full); capture ends there.
    public private(set) var failure: String?

    static let linkTypeRaw: UInt32 = 101
    static let snapLength: UInt32 = 65_535

    /// Creates (or truncates) `path` and writes the file header.
    public init(path: String) throws(LoopError) {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LoopError("--pcap \(path): \(String(cString: strerror(errno)))") }
        self.path = path
        buffer = .allocate(byteCount: 1 << 18, alignment: 16)
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
        flush()
        close(fd)
        buffer.deallocate()
    }

    /// Records one packet, timestamped now (wall clock).
    public func record(_ packet: UnsafeRawBufferPointer) {
        guard !failed else { return }
        let length = min(packet.count, Int(Self.snapLength))
        if used + 16 + length > buffer.count { flush() }
        guard used + 16 + length <= buffer.count else { return }
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

    /// Writes what is buffered.
    public func flush() {
        var offset = 0
        while offset < used && !failed {
            let n = write(fd, buffer.baseAddress! + offset, used - offset)
            if n > 0 {
                offset += n
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                failed = true
                failure = n < 0 ? String(cString: strerror(errno)) : "nothing written"
            }
        }
        used = 0
    }

    @inline(__always) func append<T: FixedWidthInteger>(_ value: T) {
        // pcap files are written in the host's byte order; the magic number tells readers which one.
        withUnsafeBytes(of: value) { bytes in
            UnsafeMutableRawBufferPointer(rebasing: buffer[used..<(used + bytes.count)]).copyMemory(from: bytes)
        }
        used += MemoryLayout<T>.size
    }
}
