import Foundation
import Metainfo
import Testing

@testable import Tracker

/// A blocking client socket for the listener tests: connect, send what a client would, read all.
struct RawClient: Sendable {
    let fd: Int32

    /// `receiveBuffer`: a small SO_RCVBUF makes the server's writes run out of room.
    init?(port: Int, receiveBuffer: Int32? = nil) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if connected != 0 {
            close(fd)
            return nil
        }
    }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { return }
            offset += sent
        }
    }

    /// Everything until the server closes (or 5 s without a byte).
    func readToEnd() -> (text: String, closed: Bool) {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { return (String(decoding: received, as: UTF8.self), true) }
            if count < 0 { return (String(decoding: received, as: UTF8.self), false) }
            received += buffer[0..<count]
        }
    }

    /// Reads until `text` holds `answers` complete responses to "/", or the server closes.
    func read(answers: Int) -> String {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while String(decoding: received, as: UTF8.self).components(separatedBy: "HTTP/1.").count - 1 < answers {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += buffer[0..<count]
        }
        return String(decoding: received, as: UTF8.self)
    }

    func finish() { close(fd) }
}

/// The plain-HTTP listener of the tracker's own, over real sockets: keep-alive and close, pipelining,
/// partial writes, the connection cap, and shutdown.
@Suite(.serialized) struct TrackerHTTPListenerTests {
    func withServer(_ configure: (inout TrackerServer.Limits) -> Void = { _ in }, _ body: (TrackerServer) async throws -> Void) async throws {
        var limits = TrackerServer.Limits()
        limits.threads = 2
        configure(&limits)
        let server = try await TrackerServer.start(
            host: "127.0.0.1", port: 0, configuration: TrackerConfiguration(), limits: limits, logger: silentLogger)
        do {
            try await body(server)
        } catch {
            await server.shutdown()
            throw error
        }
        await server.shutdown()
    }

    /// The client runs on a thread of its own: were the pause between its two writes a task's sleep,
    /// a busy test run could stretch it past the request timeout (a 408, rightly).
    @Test func pipelinedAndSplitRequestsAreAnsweredInOrderThenCloseIsHonoured() async throws {
        try await withServer({ $0.requestTimeout = .seconds(60) }) { server in
            let client = try #require(RawClient(port: server.port))
            defer { client.finish() }
            let (text, closed) = await onThread {
                client.send("GET / HTTP/1.1\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET /sta")
                Thread.sleep(forTimeInterval: 0.05)
                client.send("ts?format=json HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n")
                return client.readToEnd()
            }.value
            #expect(closed)
            let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.components(separatedBy: "\r\n")[0] }
            #expect(statuses == ["200 OK", "404 Not Found", "200 OK", "200 OK"], "\(text)")
            #expect(text.contains("\"torrents\""))
            #expect(text.hasSuffix("Connection: close\r\n\r\n"), "HEAD has no body, and nothing follows the close")
        }
    }

    @Test func http10ClosesAndKeepAliveStaysOpen() async throws {
        try await withServer { server in
            let old = try #require(RawClient(port: server.port))
            defer { old.finish() }
            old.send("GET / HTTP/1.0\r\n\r\n")
            let (text, closed) = await onThread { old.readToEnd() }.value
            #expect(closed && text.hasPrefix("HTTP/1.0 200 OK\r\n") && text.contains("Connection: close\r\n"))
            let client = try #require(RawClient(port: server.port))
            defer { client.finish() }
            for _ in 0..<3 {
                client.send("GET / HTTP/1.1\r\n\r\n")
                #expect(await onThread { client.read(answers: 1) }.value.contains("Connection: keep-alive\r\n"))
            }
        }
    }

    /// A client that sends many requests and does not read: the answers wait (the socket has no
    /// room), the server stops reading its requests, and all are answered once it reads.
    @Test func answersToAClientThatDoesNotReadAreWrittenWhenItDoes() async throws {
        try await withServer({ $0.requestTimeout = .seconds(60) }) { server in
            let client = try #require(RawClient(port: server.port, receiveBuffer: 4096))
            defer { client.finish() }
            let count = 3000
            let (text, closed) = await onThread {
                client.send(String(repeating: "GET / HTTP/1.1\r\n\r\n", count: count - 1) + "GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                Thread.sleep(forTimeInterval: 0.3)
                return client.readToEnd()
            }.value
            #expect(closed)
            #expect(text.components(separatedBy: "HTTP/1.1 200 OK\r\n").count - 1 == count)
        }
    }

    @Test func connectionsBeyondTheCapAreClosedAndCounted() async throws {
        try await withServer({ $0.maxConnections = 2; $0.threads = 1 }) { server in
            let first = try #require(RawClient(port: server.port))
            let second = try #require(RawClient(port: server.port))
            defer { second.finish() }
            first.send("GET / HTTP/1.1\r\n\r\n")
            #expect(await onThread { first.read(answers: 1) }.value.contains("200 OK"))
            let third = try #require(RawClient(port: server.port))
            let (text, closed) = await onThread { third.readToEnd() }.value
            third.finish()
            #expect(text.isEmpty && closed)
            first.finish()
            try await Task.sleep(for: .seconds(0.2))
            let fourth = try #require(RawClient(port: server.port))
            defer { fourth.finish() }
            fourth.send("GET /metrics HTTP/1.1\r\n\r\n")
            #expect(await onThread { fourth.read(answers: 1) }.value.contains("vmswarm_tracker_http_errors_total{status=\"503\"} 1"))
        }
    }

    @Test func shutdownClosesOpenConnectionsAndTheSocket() async throws {
        var limits = TrackerServer.Limits()
        limits.threads = 2
        let server = try await TrackerServer.start(
            host: "127.0.0.1", port: 0, configuration: TrackerConfiguration(), limits: limits, logger: silentLogger)
        let idle = try #require(RawClient(port: server.port))
        defer { idle.finish() }
        idle.send("GET / HTTP/1.1\r\n\r\n")
        #expect(await onThread { idle.read(answers: 1) }.value.contains("200 OK"))
        let started = Date()
        await server.shutdown()
        #expect(-started.timeIntervalSinceNow < 2)
        #expect(await onThread { idle.readToEnd() }.value.closed)
        #expect(RawClient(port: server.port) == nil, "still accepting after shutdown")
    }
}
