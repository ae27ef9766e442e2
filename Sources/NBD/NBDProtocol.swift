/// The numbers of the NBD protocol (NetworkBlockDevice/nbd `doc/proto.md`) that the server speaks:
/// fixed newstyle negotiation with `NBD_OPT_GO`/`INFO`, `LIST` and `EXPORT_NAME`, and simple
/// replies in the transmission phase. Everything is big-endian on the wire.
enum NBDMagic {
    /// "NBDMAGIC", then "IHAVEOPT": the server's greeting.
    static let greeting: UInt64 = 0x4e42_444d_4147_4943
    static let option: UInt64 = 0x4948_4156_454f_5054
    static let optionReply: UInt64 = 0x0003_e889_0455_65a9
    static let request: UInt32 = 0x2560_9513
    static let simpleReply: UInt32 = 0x6744_6698
}

/// Handshake flags (server) and client flags.
enum NBDHandshakeFlag {
    static let fixedNewstyle: UInt16 = 1 << 0
    static let noZeroes: UInt16 = 1 << 1
    static let clientFixedNewstyle: UInt32 = 1 << 0
    static let clientNoZeroes: UInt32 = 1 << 1
}

/// Options a client may send before the transmission phase.
enum NBDOption: UInt32 {
    case exportName = 1
    case abort = 2
    case list = 3
    case startTLS = 5
    case info = 6
    case go = 7
    case structuredReply = 8
    case listMetaContext = 9
    case setMetaContext = 10
}

/// Option reply types; errors have bit 31 set.
enum NBDReply {
    static let ack: UInt32 = 1
    static let server: UInt32 = 2
    static let info: UInt32 = 3
    static let errorUnsupported: UInt32 = 1 << 31 | 1
    static let errorPolicy: UInt32 = 1 << 31 | 2
    static let errorInvalid: UInt32 = 1 << 31 | 3
    static let errorUnknown: UInt32 = 1 << 31 | 6
    static let errorTooBig: UInt32 = 1 << 31 | 9
}

/// What `NBD_REP_INFO` can describe.
enum NBDInfo: UInt16 {
    case export = 0
    case name = 1
    case description = 2
    case blockSize = 3
}

/// Transmission flags of an export.
enum NBDTransmissionFlag {
    static let hasFlags: UInt16 = 1 << 0
    static let readOnly: UInt16 = 1 << 1
    static let sendFlush: UInt16 = 1 << 2
    static let sendCache: UInt16 = 1 << 10
    /// Several connections see the same data: always so for a read-only export.
    static let canMultiConnection: UInt16 = 1 << 8
}

/// Commands of the transmission phase.
enum NBDCommand: UInt16 {
    case read = 0
    case write = 1
    case disconnect = 2
    case flush = 3
    case trim = 4
    case cache = 5
    case writeZeroes = 6
    case blockStatus = 7
}

/// The errno values NBD replies carry (the protocol's own numbering, not the host's).
public enum NBDError: UInt32, Sendable {
    case notPermitted = 1
    case io = 5
    case noMemory = 12
    case invalid = 22
    case noSpace = 28
    case overflow = 75
    case notSupported = 95
    case shutdown = 108
}
