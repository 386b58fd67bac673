import cv2
import numpy as np
import pytest

from drivemtl.inference.sources import SourceError, VideoWriter, open_source, read_image


def write_png(path, value):
    image = np.full((8, 12, 3), value, dtype=np.uint8)
    image[0, 0] = (255, 0, 0)  # RGB red marks channel order
    cv2.imwrite(str(path), image[..., ::-1])
    return image


def test_image_folder_and_glob(tmp_path):
    a = write_png(tmp_path / "a.png", 10)
    write_png(tmp_path / "b.png", 20)
    (tmp_path / "notes.txt").write_text("x")
    single = list(open_source(tmp_path / "a.png"))
    assert len(single) == 1 and single[0].name == "a.png"
    assert np.array_equal(single[0].image, a)  # RGB order preserved
    folder = open_source(tmp_path)
    assert len(folder) == 2 and [f.name for f in folder] == ["a.png", "b.png"]
    globbed = open_source(str(tmp_path / "b*.png"))
    assert [f.image[1, 1, 0] for f in globbed] == [20]


def test_video_round_trip(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = VideoWriter(path, fps=5.0)
    for value in (0, 128, 255):
        writer.write(np.full((32, 48, 3), value, dtype=np.uint8))
    writer.close()
    source = open_source(path)
    assert source.kind == "video" and source.fps == pytest.approx(5.0)
    frames = list(source)
    assert [f.name for f in frames] == ["clip-0000001.jpg", "clip-0000002.jpg", "clip-0000003.jpg"]
    means = [float(f.image.mean()) for f in frames]
    assert means[0] < 10 and abs(means[1] - 128) < 10 and means[2] > 245  # lossy codec


def test_bad_sources_name_the_file(tmp_path):
    with pytest.raises(SourceError, match="source does not exist"):
        open_source(tmp_path / "missing.png")
    with pytest.raises(SourceError, match="folder holds no image"):
        open_source(tmp_path)
    with pytest.raises(SourceError, match="pattern matches no image"):
        open_source(str(tmp_path / "*.jpg"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(SourceError, match=r"broken.png: not a readable image"):
        read_image(broken)
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match=r"bad\.mp4"):
        list(open_source(bad_video))
    with pytest.raises(SourceError, match=r"unsupported file type '\.txt'"):
        (tmp_path / "x.txt").write_text("x")
        open_source(tmp_path / "x.txt")
