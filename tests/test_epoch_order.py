import pytest
import torch
from torch.utils.data import TensorDataset

from hspace.data.epoch_order import BatchStream, ResumableLoader
from hspace.distributed import Shard
from hspace.errors import UserError


def stream_batches(stream, start, count):
    """Batches start..start+count-1 of the stream, through iterations as Lightning's epochs take them."""
    batches = []
    while len(batches) < count:
        stream.start = start + len(batches)
        batches += list(iter(stream))
    return batches[:count]


def test_the_stream_is_one_permutation_per_pass_in_full_batches():
    stream = BatchStream(size=10, batch_size=3, seed=5)
    assert len(stream) == 3 and len(list(stream)) == 3  # the 10th item makes no full batch
    batches = stream_batches(stream, 0, 9)  # three passes
    for data_pass in range(3):
        items = [i for batch in batches[3 * data_pass : 3 * data_pass + 3] for i in batch]
        assert len(items) == len(set(items)) == 9 and set(items) <= set(range(10))
        assert items == stream.order(data_pass).flatten().tolist()
    assert batches[:3] != batches[3:6]  # each pass its own order
    assert stream_batches(BatchStream(10, 3, 5), 0, 9) == batches  # a function of the seed alone
    assert stream_batches(BatchStream(10, 3, 6), 0, 3) != batches[:3]
    stream.start = 4
    assert list(stream) == batches[4:7]  # starting mid-pass goes on in the same order, one pass's worth


def test_the_loader_draws_nothing_from_the_global_stream_and_continues_from_its_state():
    dataset = TensorDataset(torch.arange(20))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    loader = ResumableLoader(dataset, batch_size=4, seed=3)
    iteration = iter(loader)
    first = [next(iteration)[0].tolist() for _ in range(3)]  # an epoch cut short, as a max_steps stop does
    more = [batch[0].tolist() for batch in loader]  # the next iteration goes on where that one stopped
    assert torch.equal(torch.get_rng_state(), before)
    assert len(more) == 5 and loader.state_dict() == {"batches": 8}
    order = BatchStream(20, 4, 3)
    assert first + more == order.order(0).tolist() + order.order(1)[:3].tolist()

    resumed = ResumableLoader(dataset, batch_size=4, seed=3)
    resumed.load_state_dict({"batches": 3})
    assert [batch[0].tolist() for batch in resumed] == more
    assert resumed.state_dict() == {"batches": 8}

    repeated = ResumableLoader(dataset, batch_size=4, seed=3, repeat=True)  # overfit_batches: the same batches
    assert [b[0].tolist() for b in repeated] == [b[0].tolist() for b in repeated] == order.order(0).tolist()
    assert repeated.state_dict() == {"batches": 0}  # and no place in the order to go on from


def test_the_passes_draw_from_streams_of_their_own_not_the_workers():
    """Pass e is drawn from stream e + 1 of the seed; stream 0 seeds the loader's workers, so the first pass's order
    and the workers' random draws are unrelated."""
    from hspace.data.epoch_order import WORKER_SEEDS, seeded_generator

    stream = BatchStream(12, 3, seed=7)
    for data_pass in range(2):
        drawn = torch.randperm(12, generator=seeded_generator(7, data_pass + 1))
        assert stream.order(data_pass).flatten().tolist() == drawn.tolist()
    workers = torch.randperm(12, generator=seeded_generator(7, WORKER_SEEDS))
    assert stream.order(0).flatten().tolist() != workers.tolist()


def test_a_loader_with_workers_hands_out_the_same_batches():
    loader = ResumableLoader(TensorDataset(torch.arange(12)), 4, seed=1, num_workers=1)
    iteration = iter(loader)
    handed_out = [next(iteration)[0].tolist()]  # the worker has loaded more by now
    handed_out += [batch[0].tolist() for batch in loader]
    order = BatchStream(12, 4, seed=1)
    assert handed_out == order.order(0).tolist() + order.order(1)[:1].tolist()
    assert loader.state_dict() == {"batches": 4}


def test_each_rank_takes_its_own_part_of_each_row_of_a_pass():
    ranks = [BatchStream(20, 3, seed=2, shard=Shard(rank, 3)) for rank in range(3)]
    assert [len(stream) for stream in ranks] == [2, 2, 2]  # 20 items: two rows of 9, two left out
    passes = [list(stream) for stream in ranks]
    rows = BatchStream(20, 9, seed=2).order(0).tolist()  # one process with the rows' size draws the same rows
    for slot in range(2):
        assert [i for rank in range(3) for i in passes[rank][slot]] == rows[slot]


def test_fewer_items_than_a_batch_per_process_is_one_line():
    with pytest.raises(UserError, match="make no batch of data.batch_size=4 for each of 1 processes"):
        BatchStream(3, 4, seed=0)
    with pytest.raises(UserError, match="for each of 2 processes"):
        BatchStream(7, 4, seed=0, shard=Shard(0, 2))


def test_under_a_process_group_the_datamodule_gives_each_rank_its_block_of_the_evaluation_splits(monkeypatch):
    from hspace.data import datamodule
    from hspace.data.datamodule import ImageDataModule

    images = TensorDataset(torch.arange(7))
    data = ImageDataModule(images, images, images, batch_size=2)
    seen = []
    for rank in range(2):
        monkeypatch.setattr(datamodule.Shard, "current", classmethod(lambda cls, rank=rank: Shard(rank, 2)))
        seen.append([i for batch in data.val_dataloader() for i in batch[0].tolist()])
    assert seen == [[0, 1, 2, 3], [4, 5, 6]]  # every image once, in order
    monkeypatch.setattr(datamodule.Shard, "current", classmethod(lambda cls: Shard()))
    assert [i for batch in data.test_dataloader() for i in batch[0].tolist()] == list(range(7))
