"""The shipped Shapes attribute classifier on fresh samples (another dataset seed than training used)."""

import pytest
import torch

from hspace.classifiers.cnn import AttributeCNN
from hspace.data.shapes import ATTRIBUTES, ShapesDataset
from hspace.errors import UserError

# Held-out accuracy the shipped classifier is stated to reach on every attribute (model card).
STATED_ACCURACY = 0.97


def test_shipped_classifier_reaches_its_stated_accuracy():
    classifier = AttributeCNN.load("shapes_attributes")
    assert classifier.attributes == list(ATTRIBUTES)
    ds = ShapesDataset(2000, "test", seed=12345)
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items])
    labels = torch.stack([it["attributes"] for it in items])
    accuracy = ((classifier.probabilities(images) >= 0.5).float() == labels).float().mean(dim=0)
    assert (accuracy >= STATED_ACCURACY).all(), dict(zip(ATTRIBUTES, accuracy.tolist()))
    assert classifier.features(images[:4]).shape == (4, classifier.config.hidden)


def test_missing_classifier_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no attribute classifier at") as error:
        AttributeCNN.load(tmp_path / "nothing")
    assert "\n" not in str(error.value)


def test_save_load_round_trip(tmp_path):
    from hspace.classifiers.cnn import CNNConfig

    net = AttributeCNN(CNNConfig(["a", "b"], [8, 16], hidden=12, resolution=16)).eval()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    loaded = AttributeCNN.load(net.save(tmp_path / "c"))
    assert torch.equal(loaded(x), net(x)) and loaded.attributes == ["a", "b"]


def test_training_on_data_with_other_attributes_is_refused_before_any_step(tmp_path):
    import pytorch_lightning as pl

    from hspace.data.datamodule import ShapesDataModule
    from hspace.lightning.classifier import AttributeClassifierTraining

    data = ShapesDataModule(resolution=32, n_train=8, n_val=8, n_test=8, batch_size=4)
    module = AttributeClassifierTraining(list(reversed(ATTRIBUTES)), [8], hidden=8, resolution=32)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(UserError, match="differ from module.attributes"):
        trainer.fit(module, datamodule=data)
    assert trainer.global_step == 0


def test_validation_accuracy_thresholds_probabilities_not_logits():
    """Logits between 0 and 1 are probabilities above one half: a positive prediction. Read as probabilities
    they would be thresholded at 0.5, and a batch of small positive logits would score 0 where it scores 1."""
    from hspace.lightning.classifier import AttributeClassifierTraining

    module = AttributeClassifierTraining(["a", "b", "c"], [8], hidden=8, resolution=8)
    with torch.no_grad():
        module.net.head.weight.zero_()
        module.net.head.bias.copy_(torch.tensor([0.3, 0.2, 0.7]))  # all logits in [0, 1]: all predictions 1
    labels = torch.tensor([[1.0, 0.0, 0.0]] * 3 + [[1.0, 1.0, 1.0]])
    module.validation_step({"image": torch.zeros(4, 3, 8, 8), "attributes": labels}, 0)
    accuracy = module.val_accuracy.compute()
    expected = ((torch.sigmoid(module.net(torch.zeros(4, 3, 8, 8))) > 0.5).float() == labels).float().mean(0)
    assert torch.equal(accuracy, expected) and accuracy.tolist() == [1.0, 0.25, 0.25]


def test_validation_accuracy_of_one_attribute_and_of_many_equals_torchmetrics():
    """One attribute (a dog classifier on AFHQ) as well as many; for many, what MultilabelAccuracy computes."""
    from torchmetrics.classification import MultilabelAccuracy

    from hspace.lightning.classifier import AttributeAccuracy

    g = torch.Generator().manual_seed(5)
    probabilities, labels = torch.rand(20, 3, generator=g), (torch.rand(20, 3, generator=g) > 0.5).int()
    ours, theirs = AttributeAccuracy(3), MultilabelAccuracy(num_labels=3, average=None)
    for part in (slice(0, 7), slice(7, 20)):
        ours.update(probabilities[part], labels[part])
        theirs.update(probabilities[part], labels[part])
    torch.testing.assert_close(ours.compute(), theirs.compute())
    one = AttributeAccuracy(1)
    one.update(probabilities[:, :1], labels[:, :1])
    assert float(one.compute()) == float(((probabilities[:, 0] > 0.5).int() == labels[:, 0]).float().mean())
    from hspace.lightning.classifier import AttributeClassifierTraining

    module = AttributeClassifierTraining(["dog"], [8], hidden=8, resolution=8)
    logged = {}
    module.log_dict = lambda values: logged.update(values)
    module.log = lambda name, value, **_: logged.update({name: value})
    module.validation_step({"image": torch.zeros(4, 3, 8, 8), "attributes": torch.ones(4, 1)}, 0)
    module.on_validation_epoch_end()
    assert set(logged) == {"val/acc/dog", "val/acc_min"} and float(logged["val/acc/dog"]) in (0.0, 1.0)


def test_a_classifier_changed_in_memory_is_identified_by_its_weights_and_so_is_its_fid_backend():
    import pickle

    from hspace.metrics.fid import classifier_backend

    classifier = AttributeCNN.load("shapes_attributes")
    backend = classifier_backend(classifier, "shapes_classifier")
    loaded, loaded_backend = classifier.identity(), backend.identity()
    assert loaded.startswith(classifier.weight_hash) and loaded_backend == f"classifier:{loaded}"
    with torch.no_grad():
        first = next(classifier.parameters())
        kept = first.clone()
        first.add_(0.5)  # fine-tuned in a notebook, say
        assert classifier.identity() != loaded and backend.identity() != loaded_backend
        first.copy_(kept)
    assert classifier.identity() == loaded and backend.identity() == loaded_backend  # the file's weights again
    assert pickle.loads(pickle.dumps(backend)).identity() == loaded_backend  # spawned evaluation processes
