/// A point on the driver's monotonic clock, in nanoseconds from an arbitrary origin.
///
/// The core never reads a clock: every time-sensitive call takes `now`, and `now` must never go backwards.
/// Durations are plain nanosecond counts (`UInt64`) so arithmetic stays cheap on the data path.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64

    @inlinable public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static let zero = Instant(nanoseconds: 0)

    @inlinable public static func < (a: Instant, b: Instant) -> Bool { a.nanoseconds < b.nanoseconds }

    /// `self + ns`, saturating instead of trapping.
    @inlinable public func adding(_ ns: UInt64) -> Instant {
        let (sum, overflow) = nanoseconds.addingReportingOverflow(ns)
        return Instant(nanoseconds: overflow ? .max : sum)
    }

    /// Nanoseconds from `earlier` to `self`, zero when `earlier` is later.
    @inlinable public func since(_ earlier: Instant) -> UInt64 {
        nanoseconds >= earlier.nanoseconds ? nanoseconds - earlier.nanoseconds : 0
    }

    public var description: String { "\(Double(nanoseconds) / 1e9)s" }
}

/// Nanosecond conversions for readable constants (`5 * .second`).
public enum Nanos {
    public static let millisecond: UInt64 = 1_000_000
    public static let second: UInt64 = 1_000_000_000
}
