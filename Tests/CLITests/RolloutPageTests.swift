import Foundation
import TestSupport
import Testing

/// The tracker's page of one image's rollout, as an admin's browser shows it (issue 21, point 8):
/// rendered by headless Chromium, which also takes a screenshot of it.
@Suite struct RolloutPageTests {
    @Test func headlessChromiumShowsARolloutAndTakesItsScreenshot() throws {
        let chromium = try #require(which("chromium"), "chromium is needed: run tools/test")
        let curl = try #require(which("curl"), "curl is needed: run tools/test")
        let folder = try TemporaryFolder()
        defer { folder.cleanUp() }
        let port = freePort()
        let tracker = try BackgroundProcess(vmswarmBinary, ["tracker", "--listen", "127.0.0.1:\(port)", "--config", "none"], logTo: folder.file("tracker.log"))
        defer { tracker.stop() }
        let base = "http://127.0.0.1:\(port)"
        try #require(eventually(10) { (try? runProcess(curl, ["-s", base + "/stats?format=json"]))?.stdout.contains("torrents") == true }, "\(tracker.output)")
        let hash = String(repeating: "%ab", count: 20)
        let size = 256 << 20
        func announce(_ n: Int, left: Int, downloaded: Int) throws {
            let answer = try runProcess(curl, ["-s", base + "/announce?info_hash=\(hash)&peer_id=-FK0001-\(String(format: "%012d", n))&port=\(6881 + n)&left=\(left)&downloaded=\(downloaded)&uploaded=0&numwant=0"])
            #expect(answer.stdout.contains("8:interval"), "\(answer.stdout)")
        }
        try announce(0, left: 0, downloaded: 0)
        for n in 1...3 { try announce(n, left: size, downloaded: 0) }
        Thread.sleep(forTimeInterval: 1.5)
        try announce(1, left: size / 2, downloaded: size / 2)
        try announce(2, left: size / 4, downloaded: size * 3 / 4)
        try announce(3, left: size, downloaded: 0)  // stalled

        let page = base + "/stats/" + String(repeating: "ab", count: 20)
        let json = try runProcess(curl, ["-s", page + "?format=json"]).stdout
        #expect(json.contains(#""done":1"#) && json.contains(#""in_progress":3"#), "\(json)")

        let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--user-data-dir=\(folder.file("profile"))"]
        let dom = try runProcess(chromium, flags + ["--dump-dom", page])
        try #require(dom.status == 0, "\(dom.stderr.suffix(600))")
        #expect(dom.stdout.contains(#"<div class="card" id="done"><b>1</b>nodes done</div>"#), "\(dom.stdout.prefix(2000))")
        #expect(dom.stdout.contains(#"<div class="card" id="in-progress"><b>3</b>in progress</div>"#))
        #expect(dom.stdout.contains(#"<b>stalled</b>until the last node"#), "a stalled node holds the rollout up")
        #expect(dom.stdout.contains("127.0.0.1:6884"), "the stalled node is listed first")
        #expect(dom.stdout.contains("image 256.00 MiB"))

        let screenshot = folder.file("rollout.png")
        let shot = try runProcess(chromium, flags + ["--screenshot=\(screenshot)", "--window-size=1200,800", "--hide-scrollbars", page])
        try #require(shot.status == 0, "\(shot.stderr.suffix(600))")
        let png = try #require(FileManager.default.contents(atPath: screenshot))
        #expect(png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "a PNG")
        // IHDR: width and height, big-endian, at bytes 16 and 20.
        let width = png[16..<20].reduce(0) { $0 << 8 | Int($1) }, height = png[20..<24].reduce(0) { $0 << 8 | Int($1) }
        #expect((width, height) == (1200, 800))
        #expect(png.count > 10_000, "a page with text and a bar, not a blank image: \(png.count) bytes")
    }
}
