/// The TCP control bits (RFC 9293 §3.1; AE from RFC 9768 / the former NS bit).
@_spi(OneTunInternals) public struct TCPFlags: OptionSet, Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    public var rawValue: UInt16

    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let fin = TCPFlags(rawValue: 0x001)
    public static let syn = TCPFlags(rawValue: 0x002)
    public static let rst = TCPFlags(rawValue: 0x004)
    public static let psh = TCPFlags(rawValue: 0x008)
    public static let ack = TCPFlags(rawValue: 0x010)
    public static let urg = TCPFlags(rawValue: 0x020)
    public static let ece = TCPFlags(rawValue: 0x040)
    public static let cwr = TCPFlags(rawValue: 0x080)
    public static let ae = TCPFlags(rawValue: 0x100)

    /// The bits that exist on the wire (the rest of the 12 bits after Data Offset are reserved).
    public static let wireMask: UInt16 = 0x1FF

    public var description: String {
        let names: [(TCPFlags, String)] = [
            (.fin, "FIN"), (.syn, "SYN"), (.rst, "RST"), (.psh, "PSH"), (.ack, "ACK"), (.urg, "URG"),
            (.ece, "ECE"), (.cwr, "CWR"), (.ae, "AE"),
        ]
        return "[" + names.filter { contains($0.0) }.map(\.1).joined(separator: ",") + "]"
    }
}

/// A read-only view of a TCP segment (RFC 9293 §3.1), valid only inside the `withUnsafe…` scope that owns
/// the memory; never store one.
///
///     |          Source Port          |       Destination Port        |
///     |                        Sequence Number                        |
///     |                    Acknowledgment Number                      |
///     |  Data |       |C|E|U|A|P|R|S|F|                               |
///     | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
///     |           Checksum            |         Urgent Pointer        |
///     |                           [Options]                           |
@_spi(OneTunInternals) public struct TCPSegment {
    enum Field {
        static let sourcePort = 0
        static let destinationPort = 2
        static let sequence = 4
        static let acknowledgment = 8
        static let offsetFlags = 12
        static let window = 14
        static let checksum = 16
        static let urgent = 18
        static let options = 20
    }

    public static let minimumHeaderLength = 20
    public static let maximumHeaderLength = 60

    /// The whole segment, header and data. Its length is the IP layer's business (the upper-layer payload).
    public let bytes: UnsafeRawBufferPointer

    /// Validates the header: room for 20 bytes, Data Offset ≥ 5 and within the buffer, and every option well
    /// formed (see `TCPOptions`). The checksum needs the IP addresses: `verifyChecksum(src:dst:)`.
    public init(validating buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard buffer.count >= TCPSegment.minimumHeaderLength else { throw .truncated }
        let headerLength = Int(buffer[Field.offsetFlags] >> 4) * 4
        guard headerLength >= TCPSegment.minimumHeaderLength else { throw .malformed }
        guard headerLength <= buffer.count else { throw .truncated }
        try TCPOptions.validate(buffer.netSlice(Field.options, headerLength))
        bytes = buffer
    }

    public var sourcePort: UInt16 { bytes.netU16(Field.sourcePort) }
    public var destinationPort: UInt16 { bytes.netU16(Field.destinationPort) }
    public var sequenceNumber: UInt32 { bytes.netU32(Field.sequence) }
    public var acknowledgmentNumber: UInt32 { bytes.netU32(Field.acknowledgment) }
    /// Data Offset × 4.
    public var headerLength: Int { Int(bytes[Field.offsetFlags] >> 4) * 4 }
    public var flags: TCPFlags { TCPFlags(rawValue: bytes.netU16(Field.offsetFlags) & TCPFlags.wireMask) }
    public var window: UInt16 { bytes.netU16(Field.window) }
    public var checksum: UInt16 { bytes.netU16(Field.checksum) }
    public var urgentPointer: UInt16 { bytes.netU16(Field.urgent) }
    public var optionBytes: UnsafeRawBufferPointer { bytes.netSlice(Field.options, headerLength) }
    public var options: TCPOptions { TCPOptions(optionBytes) }
    public var payload: UnsafeRawBufferPointer { bytes.netSlice(from: headerLength) }
    /// Sequence space used (RFC 9293 §3.4): the data plus one each for SYN and FIN.
    public var sequenceLength: Int {
        let f = flags
        return payload.count + (f.contains(.syn) ? 1 : 0) + (f.contains(.fin) ? 1 : 0)
    }

    /// True when the checksum over the pseudo-header (RFC 9293 §3.1) and the whole segment verifies.
    public func verifyChecksum(src: IPAddress, dst: IPAddress) -> Bool {
        var sum = Checksum.pseudoHeader(src: src, dst: dst, protocol: .tcp, length: bytes.count)
        sum.add(bytes)
        return sum.finalize() == 0
    }
}

/// A TCP header as values: what the TCP state machine reads and writes.
///
/// `parse` keeps the known options (MSS, window scale, SACK-permitted, SACK blocks, timestamps) and drops
/// the rest. `emit` writes them in a fixed order, NOP-aligned to 4-byte boundaries as Linux does when that
/// fits in 40 bytes, packed otherwise; SACK blocks that still do not fit are left out.
@_spi(OneTunInternals) public struct TCPRepr: Hashable, Sendable, BitwiseCopyable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequenceNumber: UInt32
    /// Written as is; meaningful when `flags` contains `.ack`.
    public var acknowledgmentNumber: UInt32
    public var flags: TCPFlags
    public var window: UInt16
    public var urgentPointer: UInt16
    public var maxSegmentSize: UInt16?
    /// The shift count. RFC 7323 §2.3: a received value above 14 is used as 14, so `parse` clamps.
    public var windowScale: UInt8?
    public var sackPermitted: Bool
    public var sackBlocks: TCPSackBlocks
    public var timestamps: TCPTimestamps?

    public init(
        sourcePort: UInt16, destinationPort: UInt16, sequenceNumber: UInt32, acknowledgmentNumber: UInt32 = 0,
        flags: TCPFlags, window: UInt16, urgentPointer: UInt16 = 0, maxSegmentSize: UInt16? = nil,
        windowScale: UInt8? = nil, sackPermitted: Bool = false, sackBlocks: TCPSackBlocks = TCPSackBlocks(),
        timestamps: TCPTimestamps? = nil
    ) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.sequenceNumber = sequenceNumber
        self.acknowledgmentNumber = acknowledgmentNumber
        self.flags = flags
        self.window = window
        self.urgentPointer = urgentPointer
        self.maxSegmentSize = maxSegmentSize
        self.windowScale = windowScale
        self.sackPermitted = sackPermitted
        self.sackBlocks = sackBlocks
        self.timestamps = timestamps
    }

    public static let maximumWindowScale: UInt8 = 14

    /// Reads a validated segment's header. A repeated option keeps its last value.
    public static func parse(_ segment: TCPSegment) -> TCPRepr {
        var repr = TCPRepr(
            sourcePort: segment.sourcePort, destinationPort: segment.destinationPort,
            sequenceNumber: segment.sequenceNumber, acknowledgmentNumber: segment.acknowledgmentNumber,
            flags: segment.flags, window: segment.window, urgentPointer: segment.urgentPointer)
        for option in segment.options {
            switch option {
            case .maxSegmentSize(let mss): repr.maxSegmentSize = mss
            case .windowScale(let shift): repr.windowScale = min(shift, maximumWindowScale)
            case .sackPermitted: repr.sackPermitted = true
            case .sack(let blocks): repr.sackBlocks = blocks
            case .timestamps(let ts): repr.timestamps = ts
            case .endOfList, .noOperation, .unknown: break
            }
        }
        return repr
    }

    /// How the options will be laid out: aligned or packed, how many SACK blocks, and their length.
    struct OptionLayout {
        var aligned: Bool
        var sackCount: Int
        var length: Int
    }

    static let maximumOptionLength = 40

    func optionLength(aligned: Bool, sackCount: Int) -> Int {
        var n = 0
        if aligned {
            if maxSegmentSize != nil { n += 4 }
            if windowScale != nil { n += 4 }  // NOP, WS
            if sackPermitted || timestamps != nil { n += timestamps != nil ? 12 : 4 }  // [SP|NOP NOP] (TS)
            if sackCount > 0 { n += 4 + 8 * sackCount }  // NOP NOP SACK
            return n
        }
        if maxSegmentSize != nil { n += 4 }
        if windowScale != nil { n += 3 }
        if sackPermitted { n += 2 }
        if timestamps != nil { n += 10 }
        if sackCount > 0 { n += 2 + 8 * sackCount }
        return (n + 3) & ~3
    }

    var optionLayout: OptionLayout {
        var sackCount = sackBlocks.count
        while true {
            let aligned = optionLength(aligned: true, sackCount: sackCount)
            if aligned <= TCPRepr.maximumOptionLength {
                return OptionLayout(aligned: true, sackCount: sackCount, length: aligned)
            }
            let packed = optionLength(aligned: false, sackCount: sackCount)
            if packed <= TCPRepr.maximumOptionLength {
                return OptionLayout(aligned: false, sackCount: sackCount, length: packed)
            }
            // Without SACK blocks the aligned layout is at most 20 bytes, so this ends.
            sackCount -= 1
        }
    }

    /// The header length `emit` will write: 20 plus the options.
    public var headerLength: Int { TCPSegment.minimumHeaderLength + optionLayout.length }

    /// Writes the header into the start of `segment` and then the checksum over the pseudo-header and all of
    /// `segment`, whose data must already be in place after `headerLength` bytes. `segment` is exactly the
    /// TCP segment (header + data). Returns the header length.
    @discardableResult
    public func emit(into segment: UnsafeMutableRawBufferPointer, src: IPAddress, dst: IPAddress) -> Int {
        let layout = optionLayout
        let headerLength = TCPSegment.minimumHeaderLength + layout.length
        precondition(segment.count >= headerLength, "no room for the TCP header")
        typealias F = TCPSegment.Field
        segment.netStore(sourcePort, at: F.sourcePort)
        segment.netStore(destinationPort, at: F.destinationPort)
        segment.netStore(sequenceNumber, at: F.sequence)
        segment.netStore(acknowledgmentNumber, at: F.acknowledgment)
        segment.netStore(UInt16(headerLength / 4) << 12 | flags.rawValue & TCPFlags.wireMask, at: F.offsetFlags)
        segment.netStore(window, at: F.window)
        segment.netStore(UInt16(0), at: F.checksum)
        segment.netStore(urgentPointer, at: F.urgent)
        let end = writeOptions(into: segment, layout: layout)
        // Zero padding after the last option reads as End of Option List.
        for i in end..<headerLength { segment.netStore(UInt8(0), at: i) }
        var sum = Checksum.pseudoHeader(src: src, dst: dst, protocol: .tcp, length: segment.count)
        sum.add(UnsafeRawBufferPointer(segment))
        segment.netStore(sum.finalize(), at: F.checksum)
        return headerLength
    }

    private func writeOptions(into p: UnsafeMutableRawBufferPointer, layout: OptionLayout) -> Int {
        let nop = TCPOptionKind.noOperation.rawValue
        var i = TCPSegment.Field.options
        func byte(_ b: UInt8) {
            p.netStore(b, at: i)
            i += 1
        }
        if let mss = maxSegmentSize {
            byte(TCPOptionKind.maxSegmentSize.rawValue)
            byte(4)
            p.netStore(mss, at: i)
            i += 2
        }
        if let shift = windowScale {
            if layout.aligned { byte(nop) }
            byte(TCPOptionKind.windowScale.rawValue)
            byte(3)
            byte(shift)
        }
        if sackPermitted {
            if layout.aligned && timestamps == nil {
                byte(nop)
                byte(nop)
            }
            byte(TCPOptionKind.sackPermitted.rawValue)
            byte(2)
        }
        if let ts = timestamps {
            if layout.aligned && !sackPermitted {
                byte(nop)
                byte(nop)
            }
            byte(TCPOptionKind.timestamps.rawValue)
            byte(10)
            p.netStore(ts.value, at: i)
            p.netStore(ts.echoReply, at: i + 4)
            i += 8
        }
        if layout.sackCount > 0 {
            if layout.aligned {
                byte(nop)
                byte(nop)
            }
            byte(TCPOptionKind.sack.rawValue)
            byte(UInt8(2 + 8 * layout.sackCount))
            for k in 0..<layout.sackCount {
                let block = sackBlocks[k]
                p.netStore(block.left, at: i)
                p.netStore(block.right, at: i + 4)
                i += 8
            }
        }
        return i
    }
}
