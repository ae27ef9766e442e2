"""libtorrent (python3-libtorrent, run with /usr/bin/python3) as a seeder or a downloader for
tools/bench-distribution; default session settings, no DHT, LSD, UPnP or NAT-PMP. With LT_TRANSPORT=tcp
in the environment it uses TCP only (by default libtorrent prefers uTP between libtorrent peers); with
LT_LSD=1 it finds peers by Local Service Discovery (BEP 14).

  lt-client.py seed TORRENT DATA_DIR ADDRESS PORT         serve DATA_DIR/NAME until killed
  lt-client.py get TORRENT OUT_DIR ADDRESS PORT MARKER    download into OUT_DIR, create MARKER once every
                                                          piece has verified, then keep seeding until killed
"""
import os, signal, sys, time
import libtorrent as lt

mode, torrent, directory, address, port = sys.argv[1:6]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
settings = {"listen_interfaces": "%s:%s" % (address, port), "enable_dht": False, "enable_lsd": False,
            "enable_upnp": False, "enable_natpmp": False}
if os.environ.get("LT_LSD") == "1":
    settings["enable_lsd"] = True
if os.environ.get("LT_TRANSPORT") == "tcp":
    settings.update({"enable_outgoing_utp": False, "enable_incoming_utp": False})
session = lt.session(settings)
params = {"ti": lt.torrent_info(torrent), "save_path": directory}
if mode == "seed":
    params["flags"] = lt.torrent_flags.seed_mode
handle = session.add_torrent(params)
marker = sys.argv[6] if mode == "get" else None
while True:
    if marker and handle.status().is_seeding:
        open(marker, "w").close()
        marker = None
    time.sleep(0.05)
