#if os(Linux)
    import CEpoll
    import Dispatch
    import Foundation
    import Glibc
    import Metainfo
    import NIOCore
    import Synchronization
    import TrackerProtocol

    /// The tracker's plain-HTTP front on Linux: threads of its own, each an epoll loop that accepts,
    /// reads, answers and closes on plain sockets, with no SwiftNIO channel per connection.
    ///
    /// Most BitTorrent clients open one TCP connection per announce. On NIO each of them cost a
    /// channel, a pipeline, the accept handler's futures and the close (about 35 µs, as much as
    /// opentracker spends per connection in all); here one costs `accept4`, a `read`, a `send` and a
    /// `close`, and the work of `TrackerService.answer`, which the NIO front (HTTPS) shares.
    ///
    /// The limits are the NIO front's: a request line of at most `maxURILength` (414), a head of at
    /// most `TrackerHTTPFramer.maxHeaderBytes` more (400), each request complete within
    /// `requestTimeout` of the connection's start or of the previous answer (else closed and counted
    /// as 408, by a sweep once a second or so), at most `maxConnections` open (more are accepted,
    /// counted as 503 and closed at once). Answers to pipelined requests are written in order; no
    /// more than 64 KiB of answers wait for a slow reader before its requests stop being read.
    ///
    /// Threads share the listening socket, each waiting on it with `EPOLLEXCLUSIVE` (one wakes per
    /// connection); a connection stays with the thread that accepted it.
    final class TrackerHTTPListener: Sendable {
        let localAddress: SocketAddress
        private let listenFD: Int32
        private let wakeFD: Int32
        private let finished: DispatchGroup

        private init(localAddress: SocketAddress, listenFD: Int32, wakeFD: Int32, finished: DispatchGroup) {
            self.localAddress = localAddress
            self.listenFD = listenFD
            self.wakeFD = wakeFD
            self.finished = finished
        }

        /// Binds, listens and starts `limits.threads` loops.
        static func start(host: String, port: Int, service: TrackerService, limits: TrackerServer.Limits) throws -> TrackerHTTPListener {
            let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
            let family: Int32
            switch address {
            case .v4: family = AF_INET
            case .v6: family = AF_INET6
            default: throw IOError(errnoCode: EAFNOSUPPORT, reason: "tracker listener")
            }
            let listenFD = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard listenFD >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
            var wakeFD: Int32 = -1
            do {
                var one: Int32 = 1
                setsockopt(listenFD, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                // Accepted sockets inherit it: no setsockopt per connection. Answers are one write each.
                setsockopt(listenFD, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                let bound = address.withSockAddr { bind(listenFD, $0, socklen_t($1)) }
                guard bound == 0 else { throw IOError(errnoCode: errno, reason: "bind(descriptor:ptr:bytes:)") }
                guard listen(listenFD, limits.backlog) == 0 else { throw IOError(errnoCode: errno, reason: "listen") }
                wakeFD = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
                guard wakeFD >= 0 else { throw IOError(errnoCode: errno, reason: "eventfd") }
                let local = try localAddressOf(listenFD)
                let finished = DispatchGroup()
                let connections = ConnectionCounter()
                var loops: [Int32] = []
                for _ in 0..<max(1, limits.threads) {
                    let epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
                    guard epollFD >= 0 else {
                        loops.forEach { close($0) }
                        throw IOError(errnoCode: errno, reason: "epoll_create1")
                    }
                    loops.append(epollFD)
                    guard Self.watch(epollFD, wakeFD, events: EPOLLIN.rawValue),
                        Self.watch(epollFD, listenFD, events: EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue)
                    else {
                        let code = errno
                        loops.forEach { close($0) }
                        throw IOError(errnoCode: code, reason: "epoll_ctl")
                    }
                }
                for (index, epollFD) in loops.enumerated() {
                    finished.enter()
                    let listenFD = listenFD
                    let wakeFD = wakeFD
                    let thread = Thread {
                        // Named from inside: on Linux a name set before start is not the thread's.
                        Thread.current.name = "tracker-http-\(index)"
                        ListenerLoop(epollFD: epollFD, listenFD: listenFD, wakeFD: wakeFD, service: service, limits: limits,
                            connections: connections, runsExpiry: index == 0).run()
                        finished.leave()
                    }
                    thread.start()
                }
                return TrackerHTTPListener(localAddress: local, listenFD: listenFD, wakeFD: wakeFD, finished: finished)
            } catch {
                close(listenFD)
                if wakeFD >= 0 { close(wakeFD) }
                throw error
            }
        }

        /// Stops every loop (each closes its connections), then the listening socket.
        func shutdown() async {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                finished.notify(queue: .global()) { done.resume() }
            }
            close(listenFD)
            close(wakeFD)
        }

        static func watch(_ epollFD: Int32, _ fd: Int32, events: UInt32, operation: Int32 = EPOLL_CTL_ADD) -> Bool {
            var event = epoll_event()
            event.events = events
            event.data.u64 = UInt64(UInt32(bitPattern: fd))
            return epoll_ctl(epollFD, operation, fd, &event) == 0
        }

        private static func localAddressOf(_ fd: Int32) throws -> SocketAddress {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let got = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            guard got == 0 else { throw IOError(errnoCode: errno, reason: "getsockname") }
            switch Int32(storage.ss_family) {
            case AF_INET:
                return withUnsafeBytes(of: storage) { SocketAddress($0.load(as: sockaddr_in.self)) }
            case AF_INET6:
                return withUnsafeBytes(of: storage) { SocketAddress($0.load(as: sockaddr_in6.self)) }
            default:
                throw IOError(errnoCode: EAFNOSUPPORT, reason: "getsockname")
            }
        }
    }

    /// One connection of a `ListenerLoop`.
    private final class Connection {
        var framer: TrackerHTTPFramer
        let remote: PeerAddress?
        /// Monotonic nanoseconds by which the next request must be in.
        var deadline: UInt64
        /// Answers written in part: the rest, from `sent`.
        var output: [UInt8] = []
        var sent = 0
        var closeWhenSent = false
        /// The events epoll watches for it (0: not registered yet).
        var interest: UInt32 = 0

        init(maxURILength: Int, remote: PeerAddress?, deadline: UInt64) {
            framer = TrackerHTTPFramer(maxURILength: maxURILength)
            self.remote = remote
            self.deadline = deadline
        }
    }

    /// One thread's epoll loop: the listening socket (shared), the wake-up descriptor, and the
    /// connections this thread accepted, kept in an array indexed by descriptor.
    private final class ListenerLoop {
        private let epollFD: Int32
        private let listenFD: Int32
        private let wakeFD: Int32
        private let service: TrackerService
        private let limits: TrackerServer.Limits
        private let connections: ConnectionCounter
        private let runsExpiry: Bool
        private var open: [Connection?] = []
        private var input = [UInt8](repeating: 0, count: 65536)
        private var output: [UInt8] = []
        private let timeout: UInt64
        private let sweepInterval: UInt64
        private let expiryInterval: UInt64
        /// Monotonic nanoseconds, read once per wake-up.
        private var now: UInt64 = 0
        private var nextSweep: UInt64 = 0
        private var nextExpiry: UInt64 = 0
        /// Accepting stopped until then (out of descriptors); 0 when accepting.
        private var acceptPausedUntil: UInt64 = 0

        /// Answers that may wait for one connection before its requests are no longer read.
        static let maxPendingOutput = 64 * 1024
        /// Connections accepted (and each served at once) per wake-up of the listening socket, before
        /// other ready connections get their turn. 4, 16 and 64 measured the same within noise
        /// under wrk's close mode (docs/benchmarks.md, session 20).
        static let acceptsPerWakeup = 16

        init(epollFD: Int32, listenFD: Int32, wakeFD: Int32, service: TrackerService, limits: TrackerServer.Limits,
             connections: ConnectionCounter, runsExpiry: Bool) {
            self.epollFD = epollFD
            self.listenFD = listenFD
            self.wakeFD = wakeFD
            self.service = service
            self.limits = limits
            self.connections = connections
            self.runsExpiry = runsExpiry
            timeout = UInt64(max(0, limits.requestTimeout.nanoseconds))
            sweepInterval = max(1_000_000, min(1_000_000_000, timeout / 2))
            expiryInterval = UInt64(max(1_000_000, limits.expiryInterval.nanoseconds))
        }

        static func monotonicNow() -> UInt64 {
            var time = timespec()
            clock_gettime(CLOCK_MONOTONIC, &time)
            return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
        }

        func run() {
            now = Self.monotonicNow()
            nextSweep = now + sweepInterval
            nextExpiry = now + expiryInterval
            var events = [epoll_event](repeating: epoll_event(), count: 256)
            while true {
                var wakeAt = nextSweep
                if runsExpiry { wakeAt = min(wakeAt, nextExpiry) }
                if acceptPausedUntil > 0 { wakeAt = min(wakeAt, acceptPausedUntil) }
                let waitMilliseconds = wakeAt > now ? Int32(min((wakeAt - now + 999_999) / 1_000_000, 1000)) : 0
                let count = events.withUnsafeMutableBufferPointer {
                    epoll_wait(epollFD, $0.baseAddress, Int32($0.count), waitMilliseconds)
                }
                if count < 0 && errno != EINTR { break }
                now = Self.monotonicNow()
                var stop = false
                for index in 0..<max(0, Int(count)) {
                    let fd = Int32(truncatingIfNeeded: events[index].data.u64)
                    if fd == wakeFD {
                        stop = true
                    } else if fd == listenFD {
                        acceptReady()
                    } else {
                        ready(fd)
                    }
                }
                if stop { break }
                if now >= nextSweep {
                    sweep()
                    nextSweep = now + sweepInterval
                }
                if runsExpiry && now >= nextExpiry {
                    service.expire()
                    nextExpiry = now + expiryInterval
                }
                if acceptPausedUntil > 0 && now >= acceptPausedUntil {
                    acceptPausedUntil = 0
                    _ = TrackerHTTPListener.watch(epollFD, listenFD, events: EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue)
                }
            }
            for fd in open.indices where open[fd] != nil {
                close(Int32(fd))
                connections.open.subtract(1, ordering: .relaxed)
            }
            open = []
            close(epollFD)
        }

        // MARK: Accepting

        private func acceptReady() {
            for _ in 0..<Self.acceptsPerWakeup {
                var storage = sockaddr_storage()
                var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let fd = withUnsafeMutablePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        accept4(listenFD, $0, &length, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
                    }
                }
                if fd < 0 {
                    switch errno {
                    case EINTR, ECONNABORTED, EPROTO:
                        continue
                    case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                        // Out of descriptors: the listening socket would stay readable and spin the
                        // loop. Stop watching it for a moment; connections wait in the backlog.
                        if acceptPausedUntil == 0 {
                            _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, listenFD, nil)
                            acceptPausedUntil = now + 100_000_000
                        }
                        return
                    default:
                        return  // EAGAIN: none left (another thread may have taken it)
                    }
                }
                if connections.open.add(1, ordering: .relaxed).newValue > limits.maxConnections {
                    connections.open.subtract(1, ordering: .relaxed)
                    service.metrics.httpError(503)
                    close(fd)
                    continue
                }
                let connection = Connection(maxURILength: limits.maxURILength, remote: Self.peerAddress(storage),
                    deadline: now + timeout)
                let index = Int(fd)
                if index >= open.count { open.append(contentsOf: repeatElement(nil, count: max(index + 1 - open.count, 1024))) }
                open[index] = connection
                // The request is usually in already: read it now rather than after another epoll_wait.
                readAndAnswer(fd, connection)
            }
        }

        static func peerAddress(_ storage: sockaddr_storage) -> PeerAddress? {
            switch Int32(storage.ss_family) {
            case AF_INET:
                let v4 = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in.self) }
                let raw = UInt32(bigEndian: v4.sin_addr.s_addr)
                return PeerAddress(ip: [UInt8(raw >> 24), UInt8(raw >> 16 & 0xFF), UInt8(raw >> 8 & 0xFF), UInt8(raw & 0xFF)],
                    port: UInt16(bigEndian: v4.sin_port))
            case AF_INET6:
                let v6 = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in6.self) }
                return PeerAddress(ip: withUnsafeBytes(of: v6.sin6_addr) { Array($0) }, port: UInt16(bigEndian: v6.sin6_port))
            default:
                return nil
            }
        }

        // MARK: Connections

        /// An event for `fd`. Errors and hang-ups show in the read or write that follows, not in
        /// the event's flags: the descriptor may have been closed and reused for a new connection
        /// earlier in the same batch of events.
        private func ready(_ fd: Int32) {
            guard Int(fd) < open.count, let connection = open[Int(fd)] else { return }
            if connection.sent < connection.output.count {
                flush(fd, connection)
            } else {
                readAndAnswer(fd, connection)
            }
        }

        private func readAndAnswer(_ fd: Int32, _ connection: Connection) {
            let count = input.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                input.withUnsafeBytes { connection.framer.append(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
                answer(fd, connection)
            } else if count == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                drop(fd)  // closed by the client (a half-read request goes with it), or broken
            } else {
                watch(fd, connection, EPOLLIN.rawValue)
            }
        }

        /// Answers the complete requests held, writes the answers, then waits for what comes next:
        /// more bytes, the socket's room for the rest of the answers, or nothing (closed).
        private func answer(_ fd: Int32, _ connection: Connection) {
            while true {
                output.removeAll(keepingCapacity: true)
                var closing = false
                while output.count < Self.maxPendingOutput, let event = connection.framer.next() {
                    switch event {
                    case .request(let request):
                        closing = !service.answer(request, remote: connection.remote, maxURILength: limits.maxURILength, into: &output)
                    case .failure(let status):
                        service.answerUnreadable(status: status, into: &output)
                        closing = true
                    }
                    if closing { break }
                }
                if output.isEmpty {
                    watch(fd, connection, EPOLLIN.rawValue)
                    return
                }
                if !closing { connection.deadline = now + timeout }
                let sent = output.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if sent == output.count {
                    if closing {
                        drop(fd)
                        return
                    }
                    if output.count < Self.maxPendingOutput { watch(fd, connection, EPOLLIN.rawValue); return }
                    continue  // stopped at the cap with requests maybe left: answer them
                }
                if sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                    drop(fd)
                    return
                }
                connection.output = Array(output[max(0, sent)...])
                connection.sent = 0
                connection.closeWhenSent = closing
                watch(fd, connection, EPOLLOUT.rawValue)
                return
            }
        }

        /// Writes more of an answer the socket had no room for; once it is out, goes on with the
        /// requests held (or closes).
        private func flush(_ fd: Int32, _ connection: Connection) {
            let sent = connection.output.withUnsafeBytes {
                send(fd, $0.baseAddress! + connection.sent, $0.count - connection.sent, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 {
                if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { drop(fd) }
                return
            }
            connection.sent += sent
            guard connection.sent == connection.output.count else { return }
            connection.output = []
            connection.sent = 0
            if connection.closeWhenSent {
                drop(fd)
            } else {
                answer(fd, connection)
            }
        }

        private func watch(_ fd: Int32, _ connection: Connection, _ events: UInt32) {
            guard connection.interest != events else { return }
            let operation = connection.interest == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD
            if TrackerHTTPListener.watch(epollFD, fd, events: events, operation: operation) {
                connection.interest = events
            } else {
                drop(fd)
            }
        }

        private func drop(_ fd: Int32) {
            open[Int(fd)] = nil
            close(fd)  // also takes it out of the epoll set
            connections.open.subtract(1, ordering: .relaxed)
        }

        /// Closes the connections whose request did not come in time (counted as 408, as on NIO).
        private func sweep() {
            for fd in open.indices {
                guard let connection = open[fd], connection.deadline < now else { continue }
                service.metrics.httpError(408)
                drop(Int32(fd))
            }
        }
    }
#endif
