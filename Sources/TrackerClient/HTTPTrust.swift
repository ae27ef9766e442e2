import NIOSSL

/// Whom an https:// server must prove itself to: the system's trust store, and any private CAs an
/// operator names (`--ca-file`). Made once per node and shared by every request (trackers, torrent
/// URLs, web seeds): building a context reads the whole trust store.
public struct HTTPTrust: Sendable {
    let context: NIOSSLContext
    /// The private CA files trusted beside the system's store, as given.
    public let caFiles: [String]

    /// The system's trust store, plus the PEM certificates in `caFiles`.
    public init(caFiles: [String] = []) throws(HTTPGetError) {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.additionalTrustRoots = caFiles.map { .file($0) }
        do {
            // A file that is not PEM certificates fails here, at start, not at the first request.
            for file in caFiles { _ = try NIOSSLCertificate.fromPEMFile(file) }
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw .tls("cannot use the CA certificates \(caFiles.joined(separator: ", ")): \(error)")
        }
        self.caFiles = caFiles
    }

    /// The system's store alone, made on first use.
    static let system: Result<HTTPTrust, HTTPGetError> = Result { () throws(HTTPGetError) in try HTTPTrust() }
}
