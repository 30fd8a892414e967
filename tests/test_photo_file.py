"""notebook.photo_file: your own photo from a path, a URL, a Colab upload, or a fallback array."""

import functools
import http.server
import sys
import threading
import types

import numpy as np
import pytest

from segkit.data.readers import read_image
from segkit.errors import SegkitError
from segkit.notebook import photo_file

PHOTO = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def test_fallback_array_is_written_losslessly_and_a_path_is_returned_as_is(tmp_path):
    written = photo_file("", fallback=PHOTO, folder=tmp_path / "photos")
    np.testing.assert_array_equal(read_image(written), PHOTO)
    assert photo_file(str(written), folder=tmp_path) == written


def test_a_url_is_downloaded(tmp_path):
    served = tmp_path / "served"
    source = photo_file("", fallback=PHOTO, folder=served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        got = photo_file(f"http://127.0.0.1:{server.server_port}/sample.png", folder=tmp_path / "got")
    finally:
        server.shutdown()
    assert got == tmp_path / "got" / "sample.png" and got.read_bytes() == source.read_bytes()


def test_upload_goes_through_colabs_file_picker(tmp_path, monkeypatch):
    files = types.SimpleNamespace(upload=lambda: {"street.jpg": b"jpeg bytes"})
    monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(files=files))
    got = photo_file("upload", folder=tmp_path)
    assert got == tmp_path / "street.jpg" and got.read_bytes() == b"jpeg bytes"


@pytest.mark.parametrize(("source", "message"), [("missing.jpg", "does not exist"), ("", "no photo given"),
                                                 ("http://127.0.0.1:9/x.jpg", "could not download")])
def test_bad_sources_raise_one_line(tmp_path, source, message):
    with pytest.raises(SegkitError, match=message):
        photo_file(source, folder=tmp_path)
