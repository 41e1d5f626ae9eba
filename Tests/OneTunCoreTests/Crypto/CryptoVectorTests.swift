import Testing
@testable import OneTunCore

func cryptoHex(_ s: String) -> [UInt8] {
    let chars = Array(s.utf8.filter { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") })
    func nibble(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : (c | 0x20) - 87 }
    return stride(from: 0, to: chars.count, by: 2).map { nibble(chars[$0]) << 4 | nibble(chars[$0 + 1]) }
}

func blake2sDigest(_ data: [UInt8], key: [UInt8]? = nil, length: Int = 32) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: length)
    data.withUnsafeBytes { d in
        out.withUnsafeMutableBytes { o in
            if let key {
                key.withUnsafeBytes { k in
                    var s = Blake2s(outputLength: length, key: k)
                    s.update(d)
                    s.finalize(into: o)
                }
            } else {
                var s = Blake2s(outputLength: length)
                s.update(d)
                s.finalize(into: o)
            }
        }
    }
    return out
}

@Suite struct CryptoVectorTests {
    // RFC 7693 Appendix B.
    @Test func blake2sRFC7693() {
        #expect(blake2sDigest(Array("abc".utf8)) == cryptoHex("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"))
        #expect(blake2sDigest([]) == cryptoHex("69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9"))
    }

    // The BLAKE2 reference known-answer tests (blake2s-kat.txt): key 00..1f, inputs 00..(n-1).
    @Test func blake2sKeyedKnownAnswers() {
        let key = (0..<32).map { UInt8($0) }
        #expect(blake2sDigest([], key: key) == cryptoHex("48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49"))
        #expect(blake2sDigest([0], key: key) == cryptoHex("40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1"))
        #expect(blake2sDigest((0..<64).map { UInt8($0) }, key: key) == cryptoHex("8975b0577fd35566d750b362b0897a26c399136df07bababbde6203ff2954ed4"))
    }

    @Test func blake2sStreamingEqualsOneShot() {
        let data = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let whole = blake2sDigest(data)
        for split in [0, 1, 63, 64, 65, 128, 200, 299, 300] {
            var out = [UInt8](repeating: 0, count: 32)
            data.withUnsafeBytes { d in
                var s = Blake2s()
                s.update(UnsafeRawBufferPointer(rebasing: d[0..<split]))
                s.update(UnsafeRawBufferPointer(rebasing: d[split...]))
                out.withUnsafeMutableBytes { s.finalize(into: $0) }
            }
            #expect(out == whole, "split at \(split)")
        }
    }

    // The WireGuard protocol's initial chaining key and hash (well-known constants of every implementation).
    @Test func wireGuardInitialValues() {
        #expect(StaticIdentity.initialChainingKey.bytes == cryptoHex("60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"))
        #expect(StaticIdentity.initialHash.bytes == cryptoHex("2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"))
    }

    @Test func kdfFollowsTheHMACConstruction() {
        let key = Key32(bytes: (0..<32).map { UInt8($0) })
        let input = Array("input".utf8)
        let (k1, k2, k3) = input.withUnsafeBytes { WGCrypto.kdf3(key: key, input: $0) }
        let t0 = input.withUnsafeBytes { WGCrypto.hmac(key: key, $0) }
        let t1 = [UInt8(1)].withUnsafeBytes { WGCrypto.hmac(key: t0, $0) }
        let t2 = (t1.bytes + [2]).withUnsafeBytes { WGCrypto.hmac(key: t0, $0) }
        let t3 = (t2.bytes + [3]).withUnsafeBytes { WGCrypto.hmac(key: t0, $0) }
        #expect(k1 == t1 && k2 == t2 && k3 == t3)
        #expect(input.withUnsafeBytes { WGCrypto.kdf1(key: key, input: $0) } == t1)
    }

    // RFC 4231-style check of HMAC against a direct computation with BLAKE2s.
    @Test func hmacMatchesDefinition() {
        let key = Key32(bytes: (0..<32).map { UInt8(0xa0 + $0 % 16) })
        let data = Array("The quick brown fox".utf8)
        var ipad = key.bytes + [UInt8](repeating: 0, count: 32)
        var opad = ipad
        for i in 0..<64 { ipad[i] ^= 0x36; opad[i] ^= 0x5c }
        let inner = blake2sDigest(ipad + data)
        let expected = blake2sDigest(opad + inner)
        #expect(data.withUnsafeBytes { WGCrypto.hmac(key: key, $0) }.bytes == expected)
    }

    // RFC 7748 §6.1.
    @Test func x25519RFC7748() {
        let alicePrivate = Key32(bytes: cryptoHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
        let bobPrivate = Key32(bytes: cryptoHex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
        let alicePublic = WGCrypto.x25519PublicKey(privateKey: alicePrivate)
        let bobPublic = WGCrypto.x25519PublicKey(privateKey: bobPrivate)
        #expect(alicePublic.bytes == cryptoHex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
        #expect(bobPublic.bytes == cryptoHex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
        let shared = cryptoHex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        #expect(WGCrypto.x25519(privateKey: alicePrivate, publicKey: bobPublic)?.bytes == shared)
        #expect(WGCrypto.x25519(privateKey: bobPrivate, publicKey: alicePublic)?.bytes == shared)
        // A low-order point gives an all-zero result, which must be refused.
        #expect(WGCrypto.x25519(privateKey: alicePrivate, publicKey: .zero) == nil)
    }

    // RFC 8439 §2.8.2.
    @Test func chaCha20Poly1305RFC8439() {
        let plaintext = Array("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8)
        let aad = cryptoHex("50515253c0c1c2c3c4c5c6c7")
        let key = Key32(bytes: cryptoHex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
        let nonce = cryptoHex("070000004041424344454647")
        let expectedCiphertext = cryptoHex("""
            d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116
            """)
        let expectedTag = cryptoHex("1ae10b594f09e26a7e902ecbd0600691")
        var data = plaintext
        var tag = [UInt8](repeating: 0, count: 16)
        data.withUnsafeMutableBytes { d in
            aad.withUnsafeBytes { a in
                nonce.withUnsafeBytes { n in
                    tag.withUnsafeMutableBytes { WGCrypto.sealIETF(key: key, nonce: n.baseAddress!, aad: a, inPlace: d, tag: $0.baseAddress!) }
                }
            }
        }
        #expect(data == expectedCiphertext)
        #expect(tag == expectedTag)
        func open(_ ciphertext: [UInt8], _ tag: [UInt8]) -> [UInt8]? {
            var d = ciphertext
            let ok = d.withUnsafeMutableBytes { d in
                aad.withUnsafeBytes { a in
                    nonce.withUnsafeBytes { n in
                        tag.withUnsafeBytes { WGCrypto.openIETF(key: key, nonce: n.baseAddress!, aad: a, inPlace: d, tag: $0.baseAddress!) }
                    }
                }
            }
            return ok ? d : nil
        }
        #expect(open(data, tag) == plaintext)
        var flipped = data
        flipped[10] ^= 1
        #expect(open(flipped, tag) == nil)
        var badTag = tag
        badTag[0] ^= 0x80
        #expect(open(data, badTag) == nil)
    }

    @Test func wireGuardNonceLayoutRoundTrips() {
        let key = Key32(bytes: (0..<32).map { UInt8($0) })
        let message = Array("transport".utf8)
        for counter: UInt64 in [0, 1, 0x0102_0304_0506_0708, .max - 1] {
            var data = message
            var tag = [UInt8](repeating: 0, count: 16)
            data.withUnsafeMutableBytes { d in
                tag.withUnsafeMutableBytes { WGCrypto.seal(key: key, counter: counter, aad: UnsafeRawBufferPointer(start: nil, count: 0), inPlace: d, tag: $0.baseAddress!) }
            }
            // Same as the IETF construction with nonce 0x00000000 || LE64(counter).
            var ietf = message
            var ietfTag = [UInt8](repeating: 0, count: 16)
            let nonce = [0, 0, 0, 0] + (0..<8).map { UInt8(truncatingIfNeeded: counter >> (8 * UInt64($0))) }
            ietf.withUnsafeMutableBytes { d in
                nonce.withUnsafeBytes { n in
                    ietfTag.withUnsafeMutableBytes { WGCrypto.sealIETF(key: key, nonce: n.baseAddress!, aad: UnsafeRawBufferPointer(start: nil, count: 0), inPlace: d, tag: $0.baseAddress!) }
                }
            }
            #expect(data == ietf && tag == ietfTag)
            let ok = data.withUnsafeMutableBytes { d in
                tag.withUnsafeBytes { WGCrypto.open(key: key, counter: counter, aad: UnsafeRawBufferPointer(start: nil, count: 0), inPlace: d, tag: $0.baseAddress!) }
            }
            #expect(ok && data == message)
        }
    }

    // draft-irtf-cfrg-xchacha-03 §A.3.1.
    @Test func xChaCha20Poly1305Draft() {
        let plaintext = Array("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8)
        let aad = cryptoHex("50515253c0c1c2c3c4c5c6c7")
        let key = Key32(bytes: cryptoHex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
        let nonce = cryptoHex("404142434445464748494a4b4c4d4e4f5051525354555657")
        let expectedCiphertext = cryptoHex("""
            bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e
            """)
        let expectedTag = cryptoHex("c0875924c1c7987947deafd8780acf49")
        var data = plaintext
        var tag = [UInt8](repeating: 0, count: 16)
        data.withUnsafeMutableBytes { d in
            aad.withUnsafeBytes { a in
                nonce.withUnsafeBytes { n in tag.withUnsafeMutableBytes { WGCrypto.xseal(key: key, nonce: n, aad: a, inPlace: d, tag: $0.baseAddress!) } }
            }
        }
        #expect(data == expectedCiphertext)
        #expect(tag == expectedTag)
        let ok = data.withUnsafeMutableBytes { d in
            aad.withUnsafeBytes { a in
                nonce.withUnsafeBytes { n in tag.withUnsafeBytes { WGCrypto.xopen(key: key, nonce: n, aad: a, inPlace: d, tag: $0.baseAddress!) } }
            }
        }
        #expect(ok && data == plaintext)
    }

    @Test func seededRandomIsDeterministic() {
        let a = SeededRandom(seed: 42), b = SeededRandom(seed: 42), c = SeededRandom(seed: 43)
        let xs = (0..<8).map { _ in a.nextUInt64() }
        #expect(xs == (0..<8).map { _ in b.nextUInt64() })
        #expect(xs != (0..<8).map { _ in c.nextUInt64() })
        #expect((0..<1000).allSatisfy { _ in a.uniform(below: 7) < 7 })
    }

    @Test func base64Keys() {
        let key = Key32(bytes: (0..<32).map { UInt8($0 * 7 % 256) })
        #expect(Key32(base64: key.base64) == key)
        #expect(Key32(base64: "not base64") == nil)
        #expect(Key32(base64: "AAAA") == nil)
        #expect(Key32(base64: String(key.base64.dropLast())) == nil)
        #expect(Base64.decode("Zm9vYg==") == Array("foob".utf8))
        #expect(Base64.decode("Zm9vYmE=") == Array("fooba".utf8))
        #expect(Base64.decode("Zm=vYmE=") == nil)
    }
}
