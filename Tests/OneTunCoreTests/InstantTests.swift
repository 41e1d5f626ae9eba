import Testing
@_spi(OneTunInternals) @testable import OneTunCore

@Test func instantSaturates() {
    #expect(Instant(nanoseconds: .max - 1).adding(5).nanoseconds == .max)
    #expect(Instant(nanoseconds: 5).since(Instant(nanoseconds: 9)) == 0)
}
