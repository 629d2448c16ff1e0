"""Image decoding: every mode comes out as 8-bit RGB, bad files give a reason instead of a crash."""
import io

import numpy as np
import pytest
from PIL import Image

from clipcleaner_core.data.images import (
    ImageLoadError,
    check_image_header,
    is_image_file,
    load_image,
)
from clipcleaner_core.errors import DataError


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(load_image(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert rgb[0, 2].tolist() == [255, 255, 255]
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert abs(int(rgb[0, 1, 0]) - 128) <= 1  # mid-grey stays mid-grey
    assert rgb[0, 3, 0] == 4  # 1000 / 257, not clipped to 255


def test_32_bit_int_image_holding_16_bit_values_is_scaled(tmp_path):
    image = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    path = tmp_path / "int.tif"
    image.save(path)
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 255]


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # left half white in the stored image
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    out = np.asarray(load_image(path))
    assert out.shape == (20, 10, 3)  # width and height swapped
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # left half became the top


def test_rgba_is_composited_on_white():
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[0, 0] = [255, 0, 0, 255]  # opaque red; everything else fully transparent black
    out = np.asarray(load_image(_png_bytes(Image.fromarray(pixels, mode="RGBA"))))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("mode", ["L", "LA", "1", "P", "CMYK", "I;16", "F"])
def test_every_mode_becomes_rgb_uint8(tmp_path, mode):
    source = Image.fromarray(np.full((6, 5, 3), 200, dtype=np.uint8))
    image = source.convert(mode) if mode not in {"I;16", "F"} else source.convert("L").convert(mode)
    fmt = {"CMYK": "JPEG", "F": "TIFF"}.get(mode, "PNG")
    out = load_image(_png_bytes(image, fmt))
    assert out.mode == "RGB" and out.size == (5, 6)
    assert np.asarray(out).dtype == np.uint8


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    out = np.asarray(load_image(_png_bytes(image, transparency=0)))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [10, 20, 30]


def test_bad_files_raise_image_load_error_with_reason(tmp_path):
    good = _png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))
    cases = {
        "empty.png": b"",
        "garbage.png": b"this is not an image at all",
        "truncated.png": good[: len(good) // 2],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageLoadError) as info:
            load_image(tmp_path / name)
        assert isinstance(info.value, DataError)
        assert info.value.reason and name in str(info.value)
    assert "empty" in check_image_header(tmp_path / "empty.png")
    assert "not an image" in check_image_header(tmp_path / "garbage.png")
    assert "truncated" in check_image_header(tmp_path / "truncated.png")
    assert "not found" in check_image_header(tmp_path / "missing.png")


def test_truncated_jpeg_is_caught_by_header_check(tmp_path):
    rng = np.random.default_rng(0)
    data = _png_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    assert check_image_header(path) is not None
    with pytest.raises(ImageLoadError):
        load_image(path)


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (200, 100)).save(path)
    assert "decompression bomb" in check_image_header(path, max_pixels=10_000)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(path, max_pixels=10_000)
    assert check_image_header(path) is None


def test_good_file_passes_header_check_and_extensions_are_case_insensitive(tmp_path):
    path = tmp_path / "ok.JPeG"
    Image.new("RGB", (8, 8)).save(path, format="JPEG")
    assert check_image_header(path) is None
    assert is_image_file(path) and is_image_file("a/B.PNG") and not is_image_file("notes.txt")
