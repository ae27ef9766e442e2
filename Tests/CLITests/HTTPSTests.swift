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
}
