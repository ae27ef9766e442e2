import Crypto
import Foundation

/// The 32-byte key an image is sealed with: random per image, or shared by a site through a key file.
///
/// Pieces are never sealed with it directly: `SealingParameters` derives a piece key from it and the
/// image's salt, so one shared key can seal many images without ever reusing a nonce.
public struct ContentKey: Equatable, Sendable {
    public static let byteCount = 32

    let key: SymmetricKey

    /// Accepts exactly 32 bytes.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        self.key = SymmetricKey(data: Array(bytes))
    }

    /// A fresh key from the system's secure generator.
    public static func random() -> ContentKey {
        ContentKey(key: SymmetricKey(size: .bits256))
    }

    private init(key: SymmetricKey) { self.key = key }

    /// The raw key, for wrapping and for key files.
    public var bytes: [UInt8] { key.withUnsafeBytes { Array($0) } }

    /// HKDF-SHA256 of this key with the image's salt, for one purpose (`label`).
    func derive(salt: [UInt8], label: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: key, salt: salt, info: Array(label.utf8), outputByteCount: Self.byteCount)
    }
}
