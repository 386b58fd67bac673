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


def test_a_folder_of_frames_is_one_video_in_name_order(tmp_path):
    """Frames sort by file name with numbers by value; the video is named after the folder;
    sub-folders of a folder that holds images directly are not read."""
    clip = tmp_path / "clip7"
    clip.mkdir()
    for value, name in ((30, "f10.png"), (10, "f2.png"), (20, "f9.png")):
        write_png(clip / name, value)
    (clip / "sub").mkdir()
    write_png(clip / "sub" / "x.png", 99)
    source = open_source(clip)
    assert source.kind == "frames" and source.fps == pytest.approx(5.0) and len(source) == 3
    frames = list(source)
    assert [f.name for f in frames] == ["f2.png", "f9.png", "f10.png"]
    assert [f.index for f in frames] == [0, 1, 2] and {f.video for f in frames} == {"clip7"}
    assert [int(f.image[1, 1, 0]) for f in frames] == [10, 20, 30]


def test_a_tracking_folder_is_one_video_per_sub_folder(tmp_path):
    """A BDD100K tracking folder: no image directly, one sub-folder per video (empty ones and
    files other than images skipped); frames video after video, each indexed from 0."""
    root = tmp_path / "val"
    for video, count in (("b2", 2), ("a1", 3)):
        (root / video).mkdir(parents=True)
        for i in range(count):
            write_png(root / video / f"{video}-{i + 1:07d}.jpg", 10 * i)
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("x")
    source = open_source(root)
    assert source.kind == "frames" and len(source) == 5
    assert [v.name for v in source.videos] == ["a1", "b2"]
    frames = list(source)
    assert [(f.video, f.index, f.name) for f in frames] == [
        ("a1", 0, "a1-0000001.jpg"),
        ("a1", 1, "a1-0000002.jpg"),
        ("a1", 2, "a1-0000003.jpg"),
        ("b2", 0, "b2-0000001.jpg"),
        ("b2", 1, "b2-0000002.jpg"),
    ]


def test_repeated_file_names_across_videos_get_the_video_as_folder(tmp_path):
    for video in ("x", "y"):
        (tmp_path / video).mkdir()
        write_png(tmp_path / video / "0001.png", 0)
    assert [f.name for f in open_source(tmp_path)] == ["x/0001.png", "y/0001.png"]


def test_globs_and_single_images_stay_still_images(tmp_path):
    write_png(tmp_path / "a.png", 10)
    for source in (open_source(tmp_path / "a.png"), open_source(str(tmp_path / "*.png"))):
        assert source.kind == "images"
        assert [f.video for f in source] == [None]


def test_a_folder_without_images_anywhere_is_an_error(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match=r"folder holds no image file .*sub-folders"):
        open_source(tmp_path)


def test_an_undecodable_video_is_an_error_naming_it(tmp_path):
    """An MP4 OpenCV opens (its index is intact) but whose frame data are zeroed: no frame
    decodes, and iterating it is a one-line error naming the file."""
    path = tmp_path / "clip.mp4"
    writer = VideoWriter(path, fps=5.0)
    for value in (0, 128, 255):
        writer.write(np.full((32, 48, 3), value, dtype=np.uint8))
    writer.close()
    data = path.read_bytes()
    at = data.index(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    zeroed = tmp_path / "zeroed.mp4"
    zeroed.write_bytes(data[: at + 4] + b"\x00" * (size - 8) + data[at - 4 + size :])
    source = open_source(zeroed)
    assert source.kind == "video"  # it opens ...
    with pytest.raises(SourceError, match=r"zeroed\.mp4: no frame could be decoded"):
        list(source)  # ... but nothing decodes


def test_the_video_writer_resizes_frames_of_another_size(tmp_path):
    path = tmp_path / "mixed.mp4"
    writer = VideoWriter(path, fps=5.0)
    writer.write(np.zeros((32, 48, 3), dtype=np.uint8))
    writer.write(np.full((16, 24, 3), 255, dtype=np.uint8))  # half size: resized, not dropped
    writer.close()
    frames = list(open_source(path))
    assert len(frames) == 2 and frames[1].image.shape == (32, 48, 3)
    assert frames[1].image.mean() > 245
