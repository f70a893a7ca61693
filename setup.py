"""Flex Edge: the edge agent of a last-mile delivery network."""
from setuptools import find_packages, setup

RUNTIME = [
    "paho-mqtt>=2.1,<3",
    "aiomqtt>=2.3,<3",  # drives paho from the asyncio loop (cloud_sync)
    "pyserial>=3.5,<4",
    "pyserial-asyncio-fast>=0.16,<1",  # asyncio transport over a pyserial port (add_reader on its fd)
    "gpsd-py3>=0.3.0,<0.4",
    "pynmeagps>=1.0.40,<2",
    "pyzbar>=0.1.9,<0.2",
    "zxing-cpp>=2.2,<4",
    "sqlite-utils>=3.37,<5",
    "uuid6>=2024.7.10",
    "orjson>=3.10,<4",
    "cryptography>=42,<50",  # X.509 for the fleet PKI (provisioning, the reference cloud)
    "pynacl>=1.5,<2",  # Ed25519 message signatures: 1 MB resident in the agent, where cryptography is 9 MB
    "biip>=3.4,<6",
    "cobs>=1.2,<2",
    "crc>=7.0,<9",
    "zstandard>=0.22,<1",
    "numpy>=1.26,<3",
    "pillow>=10.3,<14",
    "piexif>=1.1.3,<2",
    "opencv-python-headless>=4.9,<6",  # synthetic photo rendering only (device.vision.synth); the agent never imports it
    "connected-components-3d>=3.18,<5",  # cc3d: the locator's connected regions, without OpenCV's 33 MB
    "aiohttp>=3.9,<4",  # the local console: asyncio-native HTTP server with streaming responses (SSE)
    # The TFLite interpreter: LiteRT (the maintained successor, numpy 2 ready) where it ships wheels,
    # tflite-runtime (needs numpy<2) on the rest.
    "ai-edge-litert>=1.2,<3; platform_machine == 'x86_64' or platform_machine == 'aarch64'",
    "tflite-runtime>=2.13,<2.15; platform_machine != 'x86_64' and platform_machine != 'aarch64'",
]

setup(
    name="flexedge",
    version="0.1.0",
    description="Edge agent for last-mile delivery vans and station docks",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["device*", "firmware_bridge*", "cloud_sync*"]),
    include_package_data=True,
    package_data={"device": ["vision/models/*.tflite", "vision/models/*.json", "vision/models/*.npz",
                             "vision/models/NOTICE.*", "console/static/*"]},
    install_requires=RUNTIME,
    extras_require={
        "pi": ["picamera2>=0.3.17"],
        "pg": ["psycopg[binary]>=3.1,<4"],
        "dev": [
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",
            "hypothesis>=6.100,<7",
            "ruff>=0.5",
            "playwright>=1.40,<2",  # console browser tests, driving Debian's /usr/bin/chromium
        ],
        "train": ["tensorflow-cpu>=2.16,<2.22"],  # tools/train_housenumbers.py (--real: fine-tunes the reader head)
        # tools/convert_ppocr.py, in a venv of its own: onnx2tf pins its TensorFlow, onnx and numpy
        "convert": ["onnx2tf==1.29.24", "onnxsim==0.4.36"],
        # bench/vision_eval.py: the RapidOCR peer (onnxruntime) and real photographs as backgrounds
        "bench": ["rapidocr-onnxruntime==1.4.4", "scikit-image>=0.24,<0.27"],
    },
    entry_points={"console_scripts": ["flexedge=device.cli:main"]},
)
