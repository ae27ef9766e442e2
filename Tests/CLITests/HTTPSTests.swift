import Foundation
import TestSupport
import Testing

/// HTTPS (issue 21, point 4), against a private CA made here with openssl.
@Suite struct HTTPSTests {
    /// A CA and a certificate it signed for 127.0.0.1, in `folder`: ca.pem, leaf.pem, leaf.key.
    static func makeCertificates(in folder: TemporaryFolder) throws {
        let openssl = try #require(which("openssl"), "openssl is needed")
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: folder.file("san.ext"), atomically: true, encoding: .utf8)
        let steps: [[String]] = [
            ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=vmswarm test CA"],
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
             "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem", "-days", "2",
             "-extfile", "san.ext"],
        ]
        for step in steps {
            let result = try runProcess(openssl, step, in: folder.path)
            try #require(result.status == 0, "openssl \(step.joined(separator: " ")): \(result.stderr)")
        }
    }

    @Test func theTrackerServesHTTPSWithTheCertificateItIsGiven() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try Self.makeCertificates(in: folder)
        let curl = try #require(which("curl"))
        let port = freePort()
        let tracker = try BackgroundProcess(vmswarmBinary, [
            "tracker", "--listen", "127.0.0.1:\(port)", "--tls-cert", folder.file("leaf.pem"), "--tls-key", folder.file("leaf.key"), "--config", "none",
        ], logTo: folder.file("tracker.log"))
        defer { tracker.stop() }
        let stats = "https://127.0.0.1:\(port)/stats?format=json"
        #expect(eventually(10) { (try? runProcess(curl, ["-s", "--cacert", folder.file("ca.pem"), stats]))?.stdout.contains("torrents") == true },
            "\(tracker.output)")
        // Without the private CA the certificate is not trusted; plain HTTP gets no HTTP answer.
        #expect(try runProcess(curl, ["-s", stats]).status != 0)
        #expect(try runProcess(curl, ["-s", "http://127.0.0.1:\(port)/stats"]).stdout.contains("torrents") == false)

        let wrongKey = try runProcess(vmswarmBinary, ["tracker", "--listen", "127.0.0.1:0", "--tls-cert", folder.file("leaf.pem"), "--tls-key", folder.file("ca.pem")])
        #expect(wrongKey.status == 1)
        #expect(wrongKey.stderr.contains("cannot read the private key \(folder.file("ca.pem"))"), "\(wrongKey.stderr)")
        let half = try runProcess(vmswarmBinary, ["tracker", "--tls-cert", folder.file("leaf.pem")])
        #expect(half.status != 0 && half.stderr.contains("--tls-cert and --tls-key go together"), "\(half.stderr)")
    }

    /// The client side: `get https://…/image.torrent` fetches the torrent from an HTTPS server,
    /// announces over HTTPS to vmswarm's tracker (where the seeder announced too), and completes;
    /// a second `get` takes every piece from an https:// web seed. Without `--ca-file` the private
    /// CA is not trusted and `get` ends on one line saying why.
    @Test func getFetchesATorrentAnnouncesAndUsesAWebSeedOverHTTPS() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        try Self.makeCertificates(in: folder)
        let (cert, key, ca) = (folder.file("leaf.pem"), folder.file("leaf.key"), folder.file("ca.pem"))
        let trackerPort = freePort()
        let tracker = try BackgroundProcess(vmswarmBinary, [
            "tracker", "--listen", "127.0.0.1:\(trackerPort)", "--tls-cert", cert, "--tls-key", key, "--config", "none",
        ], logTo: folder.file("tracker.log"))
        defer { tracker.stop() }

        try FileManager.default.createDirectory(atPath: folder.file("www"), withIntermediateDirectories: true)
        let image = folder.file("www/image.img")
        try #require(try runProcess("/bin/sh", ["-c", "head -c \(3 << 20) /dev/urandom > '\(image)'"]).status == 0)
        let sha = try sha256(image)
        let torrent = folder.file("www/image.torrent")
        let created = try runProcess(vmswarmBinary, ["create", image, "-o", torrent, "--piece-size", "64K",
            "--tracker", "https://127.0.0.1:\(trackerPort)/announce", "--config", "none"])
        try #require(created.status == 0, "\(created.stderr)")
        let (webPort, web) = try WebSeedTests.server(folder.file("www"), mode: "ok", folder: folder, tls: (cert, key))
        defer { web.stop() }
        let url = "https://127.0.0.1:\(webPort)/image.torrent"

        let refused = try runProcess(vmswarmBinary, ["get", url, "--output", folder.file("refused"), "--config", "none"])
        #expect(refused.status == 1)
        let errors = refused.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        #expect(errors.count == 1 && errors[0].contains("TLS") && errors[0].contains("certificate"), "\(refused.stderr)")

        let seeder = try BackgroundProcess(vmswarmBinary, ["seed", torrent, "--data", image, "--port", "0", "--ca-file", ca, "--config", "none"],
            logTo: folder.file("seed.log"))
        defer { seeder.stop() }
        let curl = try #require(which("curl"))
        let stats = "https://127.0.0.1:\(trackerPort)/stats?format=json"
        #expect(eventually(20) { (try? runProcess(curl, ["-s", "--cacert", ca, stats]))?.stdout.contains(#""seeders":1"#) == true },
            "the seeder never announced over HTTPS: \(seeder.output)")
        let got = try runProcess(vmswarmBinary, ["get", url, "--output", folder.file("out"), "--port", "0", "--ca-file", ca, "--no-web-seeds",
            "--config", "none"])
        #expect(got.status == 0, "\(got.stderr)")
        #expect(try sha256(folder.file("out/image.img")) == sha)
        #expect(eventually(10) { (try? runProcess(curl, ["-s", "--cacert", ca, stats]))?.stdout.contains(#""completed":1"#) == true })

        seeder.stop()
        let seeded = try runProcess(vmswarmBinary, ["get", torrent, "--output", folder.file("seeded"), "--port", "0", "--ca-file", ca,
            "--web-seed", "https://127.0.0.1:\(webPort)/image.img", "--json", "--config", "none"])
        #expect(seeded.status == 0, "\(seeded.stderr)")
        #expect(try sha256(folder.file("seeded/image.img")) == sha)
        #expect((WebSeedTests.completion(seeded.stdout)?["web_seed_bytes"] as? Int) == 3 << 20, "\(seeded.stdout)")
    }
}
